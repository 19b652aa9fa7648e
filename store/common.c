/* Error names and version: the smallest translation unit in the library. */
#include "actstore/common.h"

const char *as_strerror(int code)
{
    switch (code) {
    case 0: return "success";
#define AS_ERRNO_TEXT(name, val, text) case name: return text;
    AS_ERRNO_MAP(AS_ERRNO_TEXT)
#undef AS_ERRNO_TEXT
    default: return "unknown error";
    }
}

const char *as_err_name(int code)
{
    switch (code) {
    case 0: return "AS_OK";
#define AS_ERRNO_NAME(name, val, text) case name: return #name;
    AS_ERRNO_MAP(AS_ERRNO_NAME)
#undef AS_ERRNO_NAME
    default: return "AS_EUNKNOWN";
    }
}

const char *as_version_string(void) { return AS_VERSION_STRING; }

unsigned as_version_number(void) { return AS_VERSION_NUMBER; }
