#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wh.h"

const char *wh_code_name(int code)
{
    static const char *const names[] = {"ok",           "timeout",      "cancelled", "released",
                                        "invalid_state", "invalid_name", "mismatch",  "corrupt",
                                        "unsafe",        "os"};
    if (code < 0 || code >= WH_EOS)
        return "os"; /* WH_EREPLACED too */
    return names[code];
}

int wh_fail(struct wh_err *e, int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    e->code = code;
    e->errnum = errnum;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void wh_err_about(struct wh_err *e, const char *kind, const char *name)
{
    char msg[sizeof e->msg];
    int n;
    if (strstr(e->msg, name) != NULL)
        return;
    n = snprintf(msg, sizeof msg, "%s '%s': ", kind, name);
    if (n > 0 && (size_t)n < sizeof msg) {
        memcpy(msg + n, e->msg, sizeof msg - (size_t)n - 1);
        msg[sizeof msg - 1] = '\0';
        memcpy(e->msg, msg, sizeof msg);
    }
}
