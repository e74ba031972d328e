
/*
 * ngx_http_idv_module: a small keyed store in shared memory.
 */


#include "ngx_http_idv_store.h"


static ngx_int_t ngx_http_idv_store_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_idv_store_cmp(ngx_rbtree_key_t hash, u_char *key,
    size_t klen, ngx_http_idv_store_node_t *n);
static void ngx_http_idv_store_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_idv_store_expire(ngx_http_idv_store_t *st, time_t now,
    ngx_uint_t n);


/* "zone=NAME:SIZE" */

ngx_shm_zone_t *
ngx_http_idv_store_add(ngx_conf_t *cf, ngx_str_t *value, void *tag)
{
    u_char                *p;
    ssize_t                size;
    ngx_str_t              name, s;
    ngx_shm_zone_t        *zone;
    ngx_http_idv_store_t  *st;

    if (ngx_strncmp(value->data, "zone=", 5) != 0) {
        goto invalid;
    }

    name.data = value->data + 5;

    p = (u_char *) ngx_strchr(name.data, ':');
    if (p == NULL) {
        goto invalid;
    }

    name.len = p - name.data;

    s.data = p + 1;
    s.len = value->data + value->len - s.data;

    size = ngx_parse_size(&s);

    if (name.len == 0 || size == NGX_ERROR) {
        goto invalid;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small, the minimum is %uz",
                           &name, 8 * ngx_pagesize);
        return NULL;
    }

    st = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_store_t));
    if (st == NULL) {
        return NULL;
    }

    st->name = name;

    zone = ngx_shared_memory_add(cf, &name, size, tag);
    if (zone == NULL) {
        return NULL;
    }

    if (zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NULL;
    }

    zone->init = ngx_http_idv_store_init_zone;
    zone->data = st;

    return zone;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid zone \"%V\", expected \"zone=NAME:SIZE\"",
                       value);
    return NULL;
}


static ngx_int_t
ngx_http_idv_store_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_store_t  *ost = data;

    size_t                 len;
    ngx_http_idv_store_t  *st;

    st = shm_zone->data;

    if (ost) {
        /* a reload: keep the entries */
        st->sh = ost->sh;
        st->shpool = ost->shpool;
        return NGX_OK;
    }

    st->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        st->sh = st->shpool->data;
        return NGX_OK;
    }

    st->sh = ngx_slab_alloc(st->shpool, sizeof(ngx_http_idv_store_sh_t));
    if (st->sh == NULL) {
        return NGX_ERROR;
    }

    st->shpool->data = st->sh;

    ngx_rbtree_init(&st->sh->rbtree, &st->sh->sentinel,
                    ngx_http_idv_store_rbtree_insert);
    ngx_queue_init(&st->sh->lru);

    len = sizeof(" in idv zone \"\"") + shm_zone->shm.name.len;

    st->shpool->log_ctx = ngx_slab_alloc(st->shpool, len);
    if (st->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(st->shpool->log_ctx, " in idv zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is expected: entries are evicted, not logged per alloc */
    st->shpool->log_nomem = 0;

    return NGX_OK;
}


/* the order of the tree: the hash, then the key's bytes, then its length */

static ngx_int_t
ngx_http_idv_store_cmp(ngx_rbtree_key_t hash, u_char *key, size_t klen,
    ngx_http_idv_store_node_t *n)
{
    if (hash != n->node.key) {
        return (hash < n->node.key) ? -1 : 1;
    }

    return ngx_memn2cmp(key, n->data, klen, n->klen);
}


static void
ngx_http_idv_store_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_idv_store_node_t   *n;

    n = (ngx_http_idv_store_node_t *) node;

    for ( ;; ) {

        /*
         * colliding hashes are ordered by their keys, so that a lookup
         * walks one path and finds every key
         */

        p = (ngx_http_idv_store_cmp(node->key, n->data, n->klen,
                                    (ngx_http_idv_store_node_t *) temp) < 0)
            ? &temp->left : &temp->right;

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


void
ngx_http_idv_store_lock(ngx_http_idv_store_t *st)
{
    ngx_shmtx_lock(&st->shpool->mutex);
}


void
ngx_http_idv_store_unlock(ngx_http_idv_store_t *st)
{
    ngx_shmtx_unlock(&st->shpool->mutex);
}


ngx_http_idv_store_node_t *
ngx_http_idv_store_get(ngx_http_idv_store_t *st, u_char *key, size_t klen)
{
    uint32_t                    hash;
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_idv_store_node_t  *n;

    hash = ngx_crc32_short(key, klen);

    node = st->sh->rbtree.root;
    sentinel = st->sh->rbtree.sentinel;

    while (node != sentinel) {

        n = (ngx_http_idv_store_node_t *) node;

        rc = ngx_http_idv_store_cmp(hash, key, klen, n);

        if (rc < 0) {
            node = node->left;
            continue;
        }

        if (rc > 0) {
            node = node->right;
            continue;
        }

        if (n->expire <= ngx_time()) {
            ngx_http_idv_store_delete(st, n);
            return NULL;
        }

        ngx_queue_remove(&n->lru);
        ngx_queue_insert_head(&st->sh->lru, &n->lru);

        return n;
    }

    return NULL;
}


ngx_http_idv_store_node_t *
ngx_http_idv_store_set(ngx_http_idv_store_t *st, u_char *key, size_t klen,
    size_t vlen, time_t expire, ngx_log_t *log)
{
    size_t                      size;
    ngx_uint_t                  evicted;
    ngx_queue_t                *q;
    ngx_http_idv_store_node_t  *n;

    n = ngx_http_idv_store_get(st, key, klen);

    if (n) {
        ngx_http_idv_store_delete(st, n);
    }

    ngx_http_idv_store_expire(st, ngx_time(), 2);

    size = offsetof(ngx_http_idv_store_node_t, data) + klen + vlen;
    evicted = 0;

    for ( ;; ) {
        n = ngx_slab_alloc_locked(st->shpool, size);

        if (n) {
            break;
        }

        /* full: the least recently used entry goes */

        if (ngx_queue_empty(&st->sh->lru)) {
            return NULL;
        }

        q = ngx_queue_last(&st->sh->lru);
        ngx_http_idv_store_delete(st,
                          ngx_queue_data(q, ngx_http_idv_store_node_t, lru));
        evicted++;
    }

    if (evicted) {
        st->sh->evictions += evicted;

        if (st->sh->logged + 60 <= ngx_time()) {
            st->sh->logged = ngx_time();
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "idv zone \"%V\" is full: %uA entries evicted so "
                          "far; consider a larger zone",
                          &st->name, st->sh->evictions);
        }
    }

    n->node.key = ngx_crc32_short(key, klen);
    n->klen = (uint16_t) klen;
    n->vlen = (uint32_t) vlen;
    n->expire = expire;
    n->state = 0;

    ngx_memcpy(n->data, key, klen);

    ngx_rbtree_insert(&st->sh->rbtree, &n->node);
    ngx_queue_insert_head(&st->sh->lru, &n->lru);
    st->sh->entries++;

    return n;
}


void
ngx_http_idv_store_delete(ngx_http_idv_store_t *st,
    ngx_http_idv_store_node_t *n)
{
    ngx_queue_remove(&n->lru);
    ngx_rbtree_delete(&st->sh->rbtree, &n->node);
    ngx_slab_free_locked(st->shpool, n);
    st->sh->entries--;
}


/* reclaim up to n expired entries from the cold end of the queue */

static void
ngx_http_idv_store_expire(ngx_http_idv_store_t *st, time_t now, ngx_uint_t n)
{
    ngx_queue_t                *q;
    ngx_http_idv_store_node_t  *node;

    while (n-- && !ngx_queue_empty(&st->sh->lru)) {
        q = ngx_queue_last(&st->sh->lru);
        node = ngx_queue_data(q, ngx_http_idv_store_node_t, lru);

        if (node->expire > now) {
            return;
        }

        ngx_http_idv_store_delete(st, node);
    }
}
