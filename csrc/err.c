#include <stdarg.h>
#include <stdio.h>

#include "wh.h"

const char *wh_code_name(int code)
{
    static const char *const names[] = {"ok",           "timeout",      "cancelled", "released",
                                        "invalid_state", "invalid_name", "mismatch",  "corrupt",
                                        "unsafe",        "os"};
    if (code < 0 || code > WH_EOS)
        return "os";
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
