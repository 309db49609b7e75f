/* ds4_error.c — the error record of include/ds4.h: formatting a message into it and naming
 * status codes. Owns no policy about when to fail; callers decide that. */
#include "ds4.h"

#include <stdarg.h>
#include <stdio.h>

int ds4_error_set(ds4_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *ds4_status_name(int code)
{
    switch (code) {
    case DS4_OK: return "ok";
    case DS4_E_IO: return "I/O error";
    case DS4_E_FORMAT: return "format error";
    case DS4_E_NOMEM: return "out of memory";
    case DS4_E_RANGE: return "out of range";
    case DS4_E_NOTFOUND: return "not found";
    case DS4_E_TYPE: return "wrong type";
    case DS4_E_ARG: return "invalid argument";
    default: return "unknown error";
    }
}
