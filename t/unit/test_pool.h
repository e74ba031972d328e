
/*
 * Unit tests: a malloc-backed allocator for the pure core that remembers
 * its blocks (freed at the end, so valgrind and ASan see no leak) and can
 * be told to fail at the n-th call.
 */


#ifndef _IDV_TEST_POOL_H_INCLUDED_
#define _IDV_TEST_POOL_H_INCLUDED_


#include <stdlib.h>
#include <string.h>

#include "ngx_http_idv_core.h"


/* malloc-backed allocator that remembers its blocks and can fail */

typedef struct {
    void                      **ptr;
    size_t                      n;
    size_t                      nalloc;
    size_t                      calls;
    size_t                      fail_at;    /* 1-based; 0: never fail */
} test_pool_t;


static void *
test_alloc(void *data, size_t size)
{
    void         *p, **np;
    test_pool_t  *pool;

    pool = data;

    if (++pool->calls == pool->fail_at) {
        return NULL;
    }

    if (pool->n == pool->nalloc) {
        np = realloc(pool->ptr, (pool->nalloc * 2 + 8) * sizeof(void *));
        if (np == NULL) {
            return NULL;
        }

        pool->ptr = np;
        pool->nalloc = pool->nalloc * 2 + 8;
    }

    p = malloc(size ? size : 1);
    if (p == NULL) {
        return NULL;
    }

    pool->ptr[pool->n++] = p;

    return p;
}


static void
test_pool_free(test_pool_t *pool)
{
    size_t  i;

    for (i = 0; i < pool->n; i++) {
        free(pool->ptr[i]);
    }

    free(pool->ptr);
    memset(pool, 0, sizeof(test_pool_t));
}


static ngx_http_idv_str_t
test_str(const char *s)
{
    ngx_http_idv_str_t  str;

    str.len = strlen(s);
    str.data = (u_char *) s;

    return str;
}


#endif /* _IDV_TEST_POOL_H_INCLUDED_ */
