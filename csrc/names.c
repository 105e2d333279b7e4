/*
 * Object names and their file-safe form. The escaping scheme is part of the
 * file format (doc/FORMAT.md, test vectors in spec/names_vectors.lua):
 *
 *   valid name  1..255 bytes of [A-Za-z0-9._-], not starting with '.': kept as is
 *   ""          "_"
 *   otherwise   every byte outside [A-Za-z0-9.-], every '_', and a leading '.'
 *               becomes '_' + two upper-case hex digits; if that is longer
 *               than 255 bytes, it is cut at an escape boundary to at most
 *               237 bytes and "_z" + 16 lower-case hex digits of the SHA-256
 *               of the whole original name are appended.
 *
 * In escaped output '_' is always followed by two upper-case hex digits, so
 * "_" and "_z..." never come from escaping: distinct invalid names map to
 * distinct results (up to the 64-bit hash for long ones).
 */
#include <string.h>

#include "wh.h"

static int plain_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-';
}

int wh_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > WH_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!plain_char((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

#define HASH_CUT (WH_NAME_MAX - 18) /* room for "_z" + 16 hex digits */

static size_t escaped_width(unsigned char c, size_t i)
{
    return (plain_char(c) && !(i == 0 && c == '.')) ? 1 : 3;
}

size_t wh_safe_name(const char *s, size_t len, char out[WH_NAME_MAX + 1])
{
    static const char hex[] = "0123456789ABCDEF";
    static const char lhex[] = "0123456789abcdef";
    size_t total = 0, limit, n = 0;

    if (wh_name_valid(s, len)) {
        memcpy(out, s, len);
        out[len] = '\0';
        return len;
    }
    if (len == 0) {
        strcpy(out, "_");
        return 1;
    }
    for (size_t i = 0; i < len && total <= WH_NAME_MAX; i++)
        total += escaped_width((unsigned char)s[i], i);
    limit = total <= WH_NAME_MAX ? WH_NAME_MAX : HASH_CUT;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (n + escaped_width(c, i) > limit)
            break;
        if (escaped_width(c, i) == 1) {
            out[n++] = (char)c;
        } else {
            out[n++] = '_';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (total > WH_NAME_MAX) {
        uint8_t digest[32];
        wh_sha256(s, len, digest);
        out[n++] = '_';
        out[n++] = 'z';
        for (int i = 0; i < 8; i++) {
            out[n++] = lhex[digest[i] >> 4];
            out[n++] = lhex[digest[i] & 15];
        }
    }
    out[n] = '\0';
    return n;
}

/* SHA-256 (FIPS 180-4), used only to shorten long names. */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t st[8], const uint8_t b[64])
{
    uint32_t w[64], a, bb, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 |
               b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = st[0], bb = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = bb, bb = a, a = t1 + t2;
    }
    st[0] += a, st[1] += bb, st[2] += c, st[3] += d, st[4] += e, st[5] += f, st[6] += g, st[7] += h;
}

void wh_sha256(const void *data, size_t len, uint8_t out[32])
{
    uint32_t st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    uint8_t tail[128] = {0};
    size_t full = len / 64 * 64, rest = len - full, tlen;
    uint64_t bits = (uint64_t)len * 8;

    for (size_t i = 0; i < full; i += 64)
        sha256_block(st, p + i);
    memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    tlen = rest + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < tlen; i += 64)
        sha256_block(st, tail + i);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(st[i] >> 24);
        out[4 * i + 1] = (uint8_t)(st[i] >> 16);
        out[4 * i + 2] = (uint8_t)(st[i] >> 8);
        out[4 * i + 3] = (uint8_t)st[i];
    }
}
