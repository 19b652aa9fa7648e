# Install the shared library, public headers, a pkg-config file and a CMake
# package config, so another project can find_package(actstore) or
# pkg-config --cflags --libs actstore.
include(CMakePackageConfigHelpers)

install(TARGETS actstore EXPORT actstoreTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/actstore DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/include/actstore/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/actstore)
install(EXPORT actstoreTargets NAMESPACE actstore::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/actstore)

configure_package_config_file(cmake/actstoreConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/actstoreConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/actstore)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/actstoreConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/actstoreConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/actstoreConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/actstore)

# Path from <prefix>/<libdir>/pkgconfig back up to <prefix>.
file(RELATIVE_PATH AS_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" AS_PC_TO_PREFIX "${AS_PC_TO_PREFIX}")
configure_file(cmake/actstore.pc.in ${CMAKE_CURRENT_BINARY_DIR}/actstore.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/actstore.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
