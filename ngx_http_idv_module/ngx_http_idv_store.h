
/*
 * ngx_http_idv_module: a small keyed store in shared memory.
 *
 * An rbtree keyed by a hash of the key, an LRU queue, an expiry per
 * entry; full zones evict the least recently used entries.  The state is
 * reused across reloads.  Callers hold the zone's mutex around every call
 * (ngx_http_idv_store_lock/unlock).
 */


#ifndef _NGX_HTTP_IDV_STORE_H_INCLUDED_
#define _NGX_HTTP_IDV_STORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct {
    ngx_rbtree_node_t           node;           /* key: hash of the key */
    ngx_queue_t                 lru;
    time_t                      expire;
    uint32_t                    vlen;
    uint16_t                    klen;
    u_char                      state;          /* the caller's */
    u_char                      data[1];        /* key, then value */
} ngx_http_idv_store_node_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;
    ngx_atomic_t                entries;
    ngx_atomic_t                evictions;
    time_t                      logged;         /* last "zone full" line */
} ngx_http_idv_store_sh_t;


typedef struct {
    ngx_http_idv_store_sh_t    *sh;
    ngx_slab_pool_t            *shpool;
    ngx_str_t                   name;
} ngx_http_idv_store_t;


#define ngx_http_idv_store_value(n)  ((n)->data + (n)->klen)


ngx_shm_zone_t *ngx_http_idv_store_add(ngx_conf_t *cf, ngx_str_t *value,
    void *tag);
void ngx_http_idv_store_lock(ngx_http_idv_store_t *st);
void ngx_http_idv_store_unlock(ngx_http_idv_store_t *st);
ngx_http_idv_store_node_t *ngx_http_idv_store_get(ngx_http_idv_store_t *st,
    u_char *key, size_t klen);
ngx_http_idv_store_node_t *ngx_http_idv_store_set(ngx_http_idv_store_t *st,
    u_char *key, size_t klen, size_t vlen, time_t expire, ngx_log_t *log);
void ngx_http_idv_store_delete(ngx_http_idv_store_t *st,
    ngx_http_idv_store_node_t *n);


#endif /* _NGX_HTTP_IDV_STORE_H_INCLUDED_ */
