
/*
 * ngx_http_idv_module: helpers shared by the libFuzzer targets in t/fuzz/.
 *
 * Built by ./build.sh fuzz with clang -fsanitize=fuzzer,address,undefined
 * together with the pure core (the ngx_http_idv_module sources that need
 * no nginx).
 * A failed FUZZ_CHECK() aborts, which libFuzzer records as a crash.
 */


#ifndef _IDV_FUZZ_H_INCLUDED_
#define _IDV_FUZZ_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_idv_core.h"


#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n",                     \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)


/*
 * an arena in place of the nginx pool: every block is its own malloc()
 * of exactly the size asked for (ASan's redzones on both sides of it),
 * remembered in a separate list and freed at the end of the input
 */

static void   **fuzz_blocks;
static size_t   fuzz_nblocks, fuzz_nalloc;


static inline void *
fuzz_alloc(void *data, size_t size)
{
    void   *p, **list;

    (void) data;

    if (fuzz_nblocks == fuzz_nalloc) {
        fuzz_nalloc = fuzz_nalloc ? 2 * fuzz_nalloc : 64;
        list = realloc(fuzz_blocks, fuzz_nalloc * sizeof(void *));
        FUZZ_CHECK(list != NULL);
        fuzz_blocks = list;
    }

    p = malloc(size ? size : 1);
    FUZZ_CHECK(p != NULL);

    fuzz_blocks[fuzz_nblocks++] = p;

    return p;
}


static inline void
fuzz_free_all(void)
{
    while (fuzz_nblocks) {
        free(fuzz_blocks[--fuzz_nblocks]);
    }
}


/* a copy of exactly len bytes (NULL when len is 0, like an empty ngx_str_t) */

static inline u_char *
fuzz_dup(const u_char *p, size_t len)
{
    u_char  *d;

    if (len == 0) {
        return NULL;
    }

    d = fuzz_alloc(NULL, len);
    memcpy(d, p, len);

    return d;
}


/*
 * split off the next field ending at sep, or at the end of the input;
 * *p becomes NULL after the last field
 */

static inline int
fuzz_field(const u_char **p, const u_char *end, u_char sep,
    ngx_http_idv_str_t *f)
{
    const u_char  *s, *e;

    if (*p == NULL) {
        return 0;
    }

    s = *p;
    e = memchr(s, sep, end - s);

    if (e == NULL) {
        e = end;
        *p = NULL;

    } else {
        *p = e + 1;
    }

    f->len = e - s;
    f->data = fuzz_dup(s, f->len);

    return 1;
}


static inline int
fuzz_hexval(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


/*
 * The oracle for the canonical encoding: decode one percent-encoded
 * component, accepting only what the encoder may write (unreserved bytes
 * and %XX with upper-case hex).  Returns the decoded length or -1.
 */

static inline long
fuzz_pct_decode(const u_char *s, size_t len, u_char *out)
{
    size_t  i, n;
    int     h, l;
    u_char  c;

    n = 0;

    for (i = 0; i < len; i++) {
        c = s[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || c == '-' || c == '_' || c == '.' || c == '~')
        {
            out[n++] = c;
            continue;
        }

        if (c != '%' || len - i < 3) {
            return -1;
        }

        h = fuzz_hexval(s[i + 1]);
        l = fuzz_hexval(s[i + 2]);

        if (h < 0 || l < 0) {
            return -1;
        }

        c = (u_char) (h << 4 | l);

        /* an unreserved byte must not be escaped */
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || c == '-' || c == '_' || c == '.' || c == '~')
        {
            return -1;
        }

        out[n++] = c;
        i += 2;
    }

    return (long) n;
}


static inline int
fuzz_str_eq(const ngx_http_idv_str_t *s, const u_char *p, size_t len)
{
    return s->len == len && (len == 0 || memcmp(s->data, p, len) == 0);
}


#endif /* _IDV_FUZZ_H_INCLUDED_ */
