/* ds4.h — public API of the ds4 engine: status codes and the error record that every
 * failing library function fills. Owns nothing else yet; the model API joins it later.
 * Invariant: functions return 0 (DS4_OK) on success or a negative DS4_E* code, never exit. */
#ifndef DS4_H
#define DS4_H

#include <stddef.h>
#include <stdint.h>

/* Status codes: 0 is success, every failure is negative. */
enum {
    DS4_OK = 0,
    DS4_E_IO = -1,       /* open/read/mmap failed */
    DS4_E_FORMAT = -2,   /* malformed file or data */
    DS4_E_NOMEM = -3,    /* allocation failed */
    DS4_E_RANGE = -4,    /* value or size out of range / overflow */
    DS4_E_NOTFOUND = -5, /* key or tensor missing */
    DS4_E_TYPE = -6,     /* value or tensor of the wrong type */
    DS4_E_ARG = -7,      /* invalid argument from the caller */
};

/* An error record: a one-line human message naming file, offset and what was wrong.
 * Callers may pass NULL when they do not want the text. */
typedef struct ds4_error {
    int code;
    char msg[512];
} ds4_error;

/* Fills err (if non-NULL) with code and a printf-style message; returns code. */
int ds4_error_set(ds4_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns a static name for a status code ("format error", ...). */
const char *ds4_status_name(int code);

#endif
