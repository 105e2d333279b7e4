/*
 * libFuzzer target: names (csrc/names.c). For any bytes, wh_safe_name gives
 * 1..255 bytes of [A-Za-z0-9._-] not starting with '.', NUL-terminated, that
 * wh_name_valid accepts; it is idempotent; a valid name is kept as is; and an
 * escaped name that needed no hash decodes back to the input (so two invalid
 * names never share a file unless one of them is long enough to be hashed).
 * wh_name_valid agrees with an independent definition (doc/FORMAT.md, "Names").
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wh.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static int plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-';
}

static int valid(const uint8_t *s, size_t n)
{
    if (n == 0 || n > 255 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!plain(s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[WH_NAME_MAX + 1], again[WH_NAME_MAX + 1], *copy;
    size_t n, m, width = 0;

    /* wh_name_valid may read exactly `size` bytes: give it a buffer of that size. */
    copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    CHECK(wh_name_valid(copy, size) == valid(data, size));
    n = wh_safe_name(copy, size, out);
    free(copy);

    CHECK(n >= 1 && n <= WH_NAME_MAX && strlen(out) == n);
    CHECK(valid((const uint8_t *)out, n) && wh_name_valid(out, n));
    m = wh_safe_name(out, n, again);
    CHECK(m == n && memcmp(out, again, n) == 0);
    if (valid(data, size)) {
        CHECK(n == size && memcmp(out, data, size) == 0);
        return 0;
    }
    if (size == 0) {
        CHECK(n == 1 && out[0] == '_');
        return 0;
    }
    for (size_t i = 0; i < size; i++)
        width += (plain(data[i]) && !(i == 0 && data[i] == '.')) ? 1 : 3;
    if (width > WH_NAME_MAX) {
        /* Hashed: "_z" and 16 lower-case hex digits after at most 237 bytes. */
        CHECK(n >= 18 && n <= WH_NAME_MAX && out[n - 18] == '_' && out[n - 17] == 'z');
        return 0;
    }
    /* Not hashed: it decodes back to the input. */
    m = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '_') {
            CHECK(i + 2 < n && hexval(out[i + 1]) >= 0 && hexval(out[i + 2]) >= 0);
            CHECK(m < size && data[m] == (uint8_t)(hexval(out[i + 1]) * 16 + hexval(out[i + 2])));
            i += 2;
        } else {
            CHECK(m < size && data[m] == (uint8_t)out[i]);
        }
        m++;
    }
    CHECK(m == size);
    return 0;
}
