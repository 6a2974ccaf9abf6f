/*
 * rsloc_common.c — the small helpers shared by the native library's files (declared in
 * rsloc_internal.h) and rsloc_strerror. The rules are spelled out in native/README.md.
 */
#include "rsloc_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- small helpers ---------------------------------------------------------------------- */

int rsloc__fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* malloc of count elements, NULL on overflow; never a zero-byte request. */
void *rsloc__alloc_array(size_t count, size_t size)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size)
        return NULL;
    return malloc(count * size);
}

void *rsloc__zalloc_array(size_t count, size_t size)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size)
        return NULL;
    return calloc(count, size);
}

/* Make room for `need` elements (at least one, so *data is never NULL afterwards) in a growable
 * array; 0 or RSLOC_ENOMEM. */
int rsloc__reserve(void **data, size_t *cap, size_t need, size_t size)
{
    size_t cap2;
    void *p;
    if (need <= *cap && *data != NULL)
        return RSLOC_OK;
    cap2 = *cap < 16 ? 16 : *cap;
    while (cap2 < need) {
        if (cap2 > SIZE_MAX / 2)
            return RSLOC_ENOMEM;
        cap2 *= 2;
    }
    if (cap2 > SIZE_MAX / size)
        return RSLOC_ENOMEM;
    p = realloc(*data, cap2 * size);
    if (p == NULL)
        return RSLOC_ENOMEM;
    *data = p;
    *cap = cap2;
    return RSLOC_OK;
}

int rsloc__cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void rsloc__sort_i32(int32_t *v, size_t n)
{
    size_t i, j;
    if (n > 32) {
        qsort(v, n, sizeof *v, rsloc__cmp_i32);
        return;
    }
    for (i = 1; i < n; i++) {
        int32_t x = v[i];
        for (j = i; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

const char *rsloc_strerror(int code)
{
    switch (code) {
    case RSLOC_OK:
        return "success";
    case RSLOC_EINVAL:
        return "invalid argument";
    case RSLOC_ENOMEM:
        return "out of memory";
    case RSLOC_ELIMIT:
        return "work or size limit exceeded";
    default:
        return "unknown rsloc status code";
    }
}
