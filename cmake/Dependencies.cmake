# System dependencies (Debian 12 packages; scripts/setup.sh installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(JEMALLOC REQUIRED IMPORTED_TARGET jemalloc)
pkg_check_modules(LIBUV    REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(ZSTD     REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(CJSON    REQUIRED IMPORTED_TARGET libcjson)
pkg_check_modules(ZLIB     REQUIRED IMPORTED_TARGET zlib)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)

# llhttp: Debian 12 ships its C sources in node-llhttp; build them here as a
# static library (never copied into this repository).
set(AS_LLHTTP_DIR /usr/share/llhttp CACHE PATH "llhttp C sources (node-llhttp)")
set(AS_LLHTTP_INC /usr/share/include/llhttp CACHE PATH "llhttp header")
if(NOT EXISTS ${AS_LLHTTP_DIR}/llhttp.c OR NOT EXISTS ${AS_LLHTTP_INC}/llhttp.h)
  message(FATAL_ERROR "llhttp sources not found in ${AS_LLHTTP_DIR}: apt-get install node-llhttp")
endif()
add_library(as_llhttp STATIC ${AS_LLHTTP_DIR}/llhttp.c ${AS_LLHTTP_DIR}/api.c ${AS_LLHTTP_DIR}/http.c)
target_include_directories(as_llhttp SYSTEM PUBLIC ${AS_LLHTTP_INC})
target_compile_options(as_llhttp PRIVATE -w)
set_target_properties(as_llhttp PROPERTIES C_VISIBILITY_PRESET hidden)

add_library(as_deps INTERFACE)
target_link_libraries(as_deps INTERFACE
  PkgConfig::JEMALLOC PkgConfig::LIBUV PkgConfig::ZSTD PkgConfig::CJSON
  as_llhttp Threads::Threads m)

# oneDNN (libdnnl-dev): the layers' GEMM and conv kernels; optional, the
# layers fall back to im2col + OpenBLAS without it (AS_ONEDNN=OFF).
set(AS_HAVE_ONEDNN OFF)
if(AS_ONEDNN)
  find_path(AS_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
  find_library(AS_DNNL_LIBRARY dnnl)
  find_library(AS_GOMP_LIBRARY NAMES gomp libgomp.so.1)
  if(AS_DNNL_INCLUDE_DIR AND AS_DNNL_LIBRARY AND AS_GOMP_LIBRARY)
    set(AS_HAVE_ONEDNN ON)
    message(STATUS "oneDNN: ${AS_DNNL_LIBRARY}")
  else()
    message(WARNING "oneDNN not found (apt-get install libdnnl-dev): the layers use im2col + OpenBLAS")
  endif()
endif()
