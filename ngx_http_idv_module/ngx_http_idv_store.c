
/*
 * ngx_http_idv_module: the keyed store and its shared memory backend.
 *
 * A zone is a slab pool holding one entry per key, found through an
 * rbtree ordered by a SipHash-2-4-128 of the key under a random key that
 * lives in the zone (so every worker and every reload agrees on it).  A
 * second rbtree orders the entries that expire by their expiry time, so
 * that expired entries are reclaimed wherever they sit; an LRU queue
 * holds the entries written without "keep", the only ones ever evicted.
 *
 * A batch locks its zones in address order, evaluates every operation,
 * allocates all the memory its writes need, and only then applies them:
 * a batch that cannot get its memory changes nothing.
 */


#include <openssl/rand.h>

#include "ngx_http_idv_module.h"
#include "ngx_http_idv_siphash.h"
#include "ngx_http_idv_store.h"


#define NGX_HTTP_IDV_STORE_HASH_LEN   16

/* expired entries reclaimed in each zone when a batch starts */
#define NGX_HTTP_IDV_STORE_RECLAIM    2

/* seconds between two lines about a full zone, about evictions */
#define NGX_HTTP_IDV_STORE_LOG_FULL   10
#define NGX_HTTP_IDV_STORE_LOG_EVICT  60

/* a batch of up to this many operations plans on the stack */
#define NGX_HTTP_IDV_STORE_STACK      8


/*
 * An entry: 128 bytes and its value.  "held" is the number of the last
 * batch that held it: such an entry is neither reclaimed nor evicted
 * while that batch runs (a batch of a worker that died leaves no mark).
 */

typedef struct {
    ngx_rbtree_node_t           node;       /* key: the hash's first bytes */
    ngx_rbtree_node_t           expiry;     /* key: the expiry time */
    ngx_queue_t                 queue;      /* LRU, entries without keep */
    u_char                      hash[NGX_HTTP_IDV_STORE_HASH_LEN];
    ngx_msec_t                  written;
    uint32_t                    len;
    unsigned                    keep:1;
    unsigned                    expires:1;
    unsigned                    held:30;
    u_char                      data[1];
} ngx_http_idv_store_node_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_rbtree_t                expiry;
    ngx_rbtree_node_t           expiry_sentinel;
    ngx_queue_t                 lru;
    u_char                      key[NGX_HTTP_IDV_SIPHASH_KEY_LEN];
    ngx_atomic_t                entries;
    ngx_atomic_t                full;
    ngx_atomic_t                evicted;
    ngx_atomic_t                unavailable;    /* remote backend failed */
    time_t                      full_logged;
    time_t                      evict_logged;
    uint32_t                    batch;      /* the running batch's number */
} ngx_http_idv_store_shctx_t;


#define NGX_HTTP_IDV_STORE_BATCH_MASK   0x3fffffff

#define ngx_http_idv_store_held(sh, n)  ((n)->held == (sh)->batch)

/* the key's value after an operation is "s" */
#define ngx_http_idv_store_is(p, s)                                           \
    ((p)->len == (s)->len                                                     \
     && ((p)->len == 0 || ngx_memcmp((p)->data, (s)->data, (p)->len) == 0))


/* one operation of a running batch, and the state of its key after it */

typedef struct {
    ngx_slab_pool_t            *shpool;
    ngx_http_idv_store_shctx_t *sh;
    ngx_http_idv_store_node_t  *node;       /* the key's entry in the zone */
    ngx_http_idv_store_node_t  *fresh;      /* allocated for the new value */
    ngx_int_t                   prev;       /* the last op on the key, -1 */
    u_char                      hash[NGX_HTTP_IDV_STORE_HASH_LEN];

    u_char                     *data;
    size_t                      len;
    ngx_msec_t                  written;
    ngx_msec_t                  expire;
    u_char                      buf[16];    /* a counter, a bucket */

    unsigned                    exists:1;
    unsigned                    keep:1;
    unsigned                    expires:1;
    unsigned                    dirty:1;    /* written by the batch */
    unsigned                    last:1;     /* no later op on the key */
    unsigned                    log_full:1;
    unsigned                    log_evict:1;
} ngx_http_idv_store_plan_t;


static ngx_http_idv_store_t *ngx_http_idv_store_declared(ngx_conf_t *cf,
    ngx_str_t *name, void *tag);
static ngx_shm_zone_t *ngx_http_idv_store_running(ngx_conf_t *cf,
    ngx_str_t *name, void *tag);
static ngx_int_t ngx_http_idv_store_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_idv_store_shm_run(ngx_http_idv_store_batch_t *b);
static ngx_int_t ngx_http_idv_store_fallback_one(
    ngx_http_idv_store_batch_t *b);
static void ngx_http_idv_store_in_order(ngx_http_idv_store_batch_t *first,
    ngx_int_t (*run)(ngx_http_idv_store_batch_t *b));
static ngx_uint_t ngx_http_idv_store_lock(ngx_http_idv_store_plan_t *plan,
    ngx_uint_t n, ngx_slab_pool_t **pools);
static ngx_int_t ngx_http_idv_store_eval(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan, ngx_uint_t i, ngx_msec_t now);
static void ngx_http_idv_store_bucket(ngx_http_idv_store_op_t *op,
    ngx_http_idv_store_plan_t *p, ngx_msec_t now);
static void ngx_http_idv_store_write(ngx_http_idv_store_plan_t *p,
    u_char *data, size_t len, ngx_msec_t ttl, ngx_uint_t keep,
    ngx_msec_t now);
static ngx_int_t ngx_http_idv_store_report(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_op_t *op, ngx_http_idv_store_plan_t *p,
    ngx_msec_t now);
static ngx_int_t ngx_http_idv_store_alloc(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan, ngx_msec_t now);
static void *ngx_http_idv_store_room(ngx_http_idv_store_plan_t *p,
    size_t size, ngx_msec_t now);
static void ngx_http_idv_store_apply(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan);
static ngx_uint_t ngx_http_idv_store_reclaim(ngx_slab_pool_t *shpool,
    ngx_msec_t now, ngx_uint_t max);
static ngx_uint_t ngx_http_idv_store_evict(ngx_slab_pool_t *shpool);
static ngx_http_idv_store_node_t *ngx_http_idv_store_lookup(
    ngx_http_idv_store_shctx_t *sh, u_char *hash);
static void ngx_http_idv_store_link(ngx_http_idv_store_shctx_t *sh,
    ngx_http_idv_store_node_t *n);
static void ngx_http_idv_store_unlink(ngx_http_idv_store_shctx_t *sh,
    ngx_http_idv_store_node_t *n);
static void ngx_http_idv_store_delete(ngx_slab_pool_t *shpool,
    ngx_http_idv_store_node_t *n);
static ngx_rbtree_key_t ngx_http_idv_store_key(u_char *hash);
static void ngx_http_idv_store_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_idv_store_log(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan);

static double ngx_http_idv_store_shm_used(ngx_http_idv_store_t *st);

static ngx_uint_t ngx_http_idv_store_shm_evicted(ngx_http_idv_store_t *st);
static ngx_uint_t ngx_http_idv_store_shm_entries(ngx_http_idv_store_t *st);


static const ngx_http_idv_store_backend_t  ngx_http_idv_store_shm = {
    "shm",
    ngx_http_idv_store_shm_run,
    ngx_http_idv_store_shm_used,
    ngx_http_idv_store_full,
    ngx_http_idv_store_shm_evicted,
    ngx_http_idv_store_shm_entries,
    NULL
};


/* configuration: "zone=NAME:SIZE", the declaration, the registry */

ngx_int_t
ngx_http_idv_store_param(ngx_conf_t *cf, ngx_http_idv_store_conf_t *sc,
    ngx_str_t *value)
{
    u_char     *p;
    ssize_t     size;
    ngx_str_t  *args, name, s;

    args = cf->args->elts;

    if (value->len > 12 && ngx_strncmp(value->data, "store=redis:", 12) == 0)
    {
        sc->remote.data = value->data + 12;
        sc->remote.len = value->len - 12;
        return NGX_OK;
    }

    if (value->len > 9 && ngx_strncmp(value->data, "on_error=", 9) == 0) {
        s.data = value->data + 9;
        s.len = value->len - 9;

        if (s.len == 6 && ngx_strncmp(s.data, "closed", 6) == 0) {
            sc->on_error = NGX_HTTP_IDV_STORE_CLOSED;

        } else if (s.len == 4 && ngx_strncmp(s.data, "open", 4) == 0) {
            sc->on_error = NGX_HTTP_IDV_STORE_OPEN;

        } else if (s.len == 5 && ngx_strncmp(s.data, "local", 5) == 0) {
            sc->on_error = NGX_HTTP_IDV_STORE_LOCAL;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\" in \"%V\", expected "
                               "\"on_error=closed\", \"on_error=open\" or "
                               "\"on_error=local\"", value, &args[0]);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (value->len < 5 || ngx_strncmp(value->data, "zone=", 5) != 0) {
        return NGX_DECLINED;
    }

    if (sc->name.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" takes one \"zone=\" parameter",
                           &args[0]);
        return NGX_ERROR;
    }

    name.data = value->data + 5;
    p = ngx_strlchr(name.data, value->data + value->len, ':');

    if (p == NULL || p == name.data) {
        goto invalid;
    }

    name.len = p - name.data;

    s.data = p + 1;
    s.len = value->data + value->len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        goto invalid;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" of \"%V\" is too small, the minimum "
                           "is %uzk", &name, &args[0],
                           8 * ngx_pagesize / 1024);
        return NGX_ERROR;
    }

    sc->name = name;
    sc->size = size;

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid \"%V\" in \"%V\", expected "
                       "\"zone=NAME:SIZE\" such as \"zone=one:1m\"",
                       value, &args[0]);
    return NGX_ERROR;
}


ngx_http_idv_store_t *
ngx_http_idv_store_zone(ngx_conf_t *cf, const char *kind, void *tag,
    ngx_msec_t *ttl)
{
    ngx_int_t                   rc, t;
    ngx_str_t                  *value, s;
    ngx_uint_t                  i;
    ngx_http_idv_store_conf_t   sc;

    value = cf->args->elts;

    ngx_memzero(&sc, sizeof(ngx_http_idv_store_conf_t));

    for (i = 1; i < cf->args->nelts; i++) {

        rc = ngx_http_idv_store_param(cf, &sc, &value[i]);

        if (rc == NGX_OK) {
            continue;
        }

        if (rc == NGX_ERROR) {
            return NULL;
        }

        if (ttl && value[i].len > 4
            && ngx_strncmp(value[i].data, "ttl=", 4) == 0)
        {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            t = ngx_parse_time(&s, 0);

            if (t == NGX_ERROR || t < 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\", expected a time of at "
                                   "least 1s", &value[i]);
                return NULL;
            }

            *ttl = (ngx_msec_t) t;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\", expected "
                           "\"zone=NAME:SIZE\", \"store=redis:NAME\", "
                           "\"on_error=...\"%s", &value[i], &value[0],
                           ttl ? " or \"ttl=TIME\"" : "");
        return NULL;
    }

    return ngx_http_idv_store_add(cf, &sc, kind, tag);
}


ngx_http_idv_store_t *
ngx_http_idv_store_add(ngx_conf_t *cf, ngx_http_idv_store_conf_t *sc,
    const char *kind, void *tag)
{
    ngx_str_t                  *args;
    ngx_shm_zone_t             *shm_zone;
    ngx_http_idv_store_t       *st, **stp;
    ngx_http_idv_main_conf_t   *imcf;

    args = cf->args->elts;

    if (sc->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone=NAME:SIZE\" "
                           "parameter", &args[0]);
        return NULL;
    }

    if (sc->on_error && sc->remote.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"on_error=\" of \"%V\" applies to a zone kept "
                           "in Redis (\"store=redis:NAME\")", &args[0]);
        return NULL;
    }

    st = ngx_http_idv_store_declared(cf, &sc->name, NULL);

    if (st) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already declared (as an idv %s "
                           "zone): every zone needs a name of its own",
                           &sc->name, st->kind);
        return NULL;
    }

    if (ngx_http_idv_store_same_size(cf, &sc->name, sc->size, kind, tag)
        != NGX_OK)
    {
        return NULL;
    }

    shm_zone = ngx_shared_memory_add(cf, &sc->name, sc->size, tag);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already declared", &sc->name);
        return NULL;
    }

    st = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_store_t));
    if (st == NULL) {
        return NULL;
    }

    st->name = sc->name;
    st->kind = kind;
    st->tag = tag;
    st->backend = &ngx_http_idv_store_shm;
    st->shm_zone = shm_zone;

    /* the Redis module finds the server once the http block is read */
    st->remote_name = sc->remote;

    if (sc->on_error) {
        st->on_error = sc->on_error;

    } else {
        /* a limit may run per node for a while; a guarantee may not */
        st->on_error = (ngx_strcmp(kind, "limit") == 0)
                       ? NGX_HTTP_IDV_STORE_LOCAL : NGX_HTTP_IDV_STORE_CLOSED;
    }

    shm_zone->init = ngx_http_idv_store_init_zone;
    shm_zone->data = st;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_module);

    stp = ngx_array_push(&imcf->stores);
    if (stp == NULL) {
        return NULL;
    }

    *stp = st;

    return st;
}


/*
 * nginx would silently start a resized zone empty: the nonces, replay
 * guards and buckets in it would be forgotten behind the operator's back.
 * Refused instead, with the same words for every kind of zone.
 */

ngx_int_t
ngx_http_idv_store_same_size(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    const char *kind, void *tag)
{
    ngx_shm_zone_t  *old;

    old = ngx_http_idv_store_running(cf, name, tag);

    if (old == NULL || old->shm.size == size) {
        return NGX_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "idv %s zone \"%V\" cannot change its size from %uz "
                       "to %uz bytes on reload: its entries would be lost; "
                       "keep the old size, or restart nginx (or rename the "
                       "zone) to start it empty",
                       kind, name, old->shm.size, size);

    return NGX_ERROR;
}


ngx_http_idv_store_t *
ngx_http_idv_store_find(ngx_conf_t *cf, ngx_str_t *name, void *tag)
{
    return ngx_http_idv_store_declared(cf, name, tag);
}


ngx_array_t *
ngx_http_idv_store_all(void)
{
    ngx_http_idv_main_conf_t  *imcf;

    imcf = ngx_http_cycle_get_module_main_conf((ngx_cycle_t *) ngx_cycle,
                                               ngx_http_idv_module);

    return imcf ? &imcf->stores : NULL;
}


/* a store of this configuration by name (and declaring module, if tag) */

static ngx_http_idv_store_t *
ngx_http_idv_store_declared(ngx_conf_t *cf, ngx_str_t *name, void *tag)
{
    ngx_uint_t                 i;
    ngx_http_idv_store_t     **st;
    ngx_http_idv_main_conf_t  *imcf;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_module);

    st = imcf->stores.elts;

    for (i = 0; i < imcf->stores.nelts; i++) {
        if (st[i]->name.len == name->len
            && ngx_strncmp(st[i]->name.data, name->data, name->len) == 0
            && (tag == NULL || st[i]->tag == tag))
        {
            return st[i];
        }
    }

    return NULL;
}


/* on reload: the running configuration's zone of this name and module */

static ngx_shm_zone_t *
ngx_http_idv_store_running(ngx_conf_t *cf, ngx_str_t *name, void *tag)
{
    ngx_uint_t        i;
    ngx_cycle_t      *old;
    ngx_shm_zone_t   *shm_zone;
    ngx_list_part_t  *part;

    old = cf->cycle->old_cycle;

    if (old == NULL || ngx_is_init_cycle(old)) {
        return NULL;
    }

    part = &old->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].tag == tag
            && shm_zone[i].shm.name.len == name->len
            && ngx_strncmp(shm_zone[i].shm.name.data, name->data, name->len)
               == 0)
        {
            return &shm_zone[i];
        }
    }
}


/* a zone of the same name and size is reused on reload with its entries */

static ngx_int_t
ngx_http_idv_store_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_store_t  *ost = data;

    size_t                       len;
    ngx_slab_pool_t             *shpool;
    ngx_http_idv_store_t        *st;
    ngx_http_idv_store_shctx_t  *sh;

    st = shm_zone->data;

    if (ost) {
        st->data = ost->data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        st->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_idv_store_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_http_idv_store_rbtree_insert);
    ngx_rbtree_init(&sh->expiry, &sh->expiry_sentinel,
                    ngx_rbtree_insert_timer_value);
    ngx_queue_init(&sh->lru);

    /* the hash key: made once, when the zone is created */

    if (RAND_bytes(sh->key, NGX_HTTP_IDV_SIPHASH_KEY_LEN) != 1) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "idv %s zone \"%V\": RAND_bytes() failed",
                      st->kind, &shm_zone->shm.name);
        return NGX_ERROR;
    }

    shpool->data = sh;
    st->data = sh;

    len = sizeof(" in idv  zone \"\"") + ngx_strlen(st->kind)
          + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in idv %s zone \"%V\"%Z",
                st->kind, &shm_zone->shm.name);

    /* a full zone is the store's to report, not the slab allocator's */
    shpool->log_nomem = 0;

    return NGX_OK;
}


/* running a batch */

ngx_int_t
ngx_http_idv_store_run(ngx_http_idv_store_batch_t *b)
{
    b->next = NULL;

    return ngx_http_idv_store_run_group(b);
}


ngx_int_t
ngx_http_idv_store_run_group(ngx_http_idv_store_batch_t *first)
{
    ngx_int_t                            rc;
    ngx_uint_t                           i;
    ngx_http_idv_store_op_t             *op;
    ngx_http_idv_store_batch_t          *b;
    const ngx_http_idv_store_backend_t  *backend;

    backend = NULL;

    for (b = first; b; b = b->next) {

        b->skipped = 0;

        for (i = 0; i < b->nops; i++) {
            op = &b->ops[i];

            if (op->store == NULL
                || op->op < NGX_HTTP_IDV_STORE_GET
                || op->op > NGX_HTTP_IDV_STORE_CHECK
                || (op->op == NGX_HTTP_IDV_STORE_BUCKET && op->rate == 0))
            {
                ngx_log_error(NGX_LOG_ALERT, b->log, 0,
                              "idv store: operation %ui of a batch is "
                              "invalid", i);
                goto failed;
            }

            if (backend
                && (op->store->backend != backend
                    || op->store->remote != first->ops[0].store->remote))
            {
                ngx_log_error(NGX_LOG_ALERT, b->log, 0,
                              "idv store: a batch mixes the backends \"%s\" "
                              "and \"%s\" (zone \"%V\")", backend->name,
                              op->store->backend->name, &op->store->name);
                goto failed;
            }

            backend = op->store->backend;
        }
    }

    if (backend == NULL) {
        for (b = first; b; b = b->next) {
            b->rc = NGX_OK;
        }

        return NGX_OK;
    }

    if (backend->cancel) {
        /* answers later: the whole group in one round trip */
        rc = backend->run(first);

        return (rc == NGX_AGAIN) ? NGX_AGAIN : first->rc;
    }

    ngx_http_idv_store_in_order(first, backend->run);

    return first->rc;

failed:

    for (b = first; b; b = b->next) {
        b->rc = NGX_ERROR;
    }

    return NGX_ERROR;
}


/* an ADD, CAS, BUCKET or CHECK of the batch declined: a group stops */

ngx_uint_t
ngx_http_idv_store_declined(ngx_http_idv_store_batch_t *b)
{
    ngx_uint_t                i;
    ngx_http_idv_store_op_t  *op;

    for (i = 0; i < b->nops; i++) {
        op = &b->ops[i];

        if (op->rc == NGX_DECLINED
            && (op->op == NGX_HTTP_IDV_STORE_ADD
                || op->op == NGX_HTTP_IDV_STORE_CAS
                || op->op == NGX_HTTP_IDV_STORE_BUCKET
                || op->op == NGX_HTTP_IDV_STORE_CHECK))
        {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_idv_store_cancel(ngx_http_idv_store_batch_t *b)
{
    if (b->nops && b->running && b->ops[0].store->backend->cancel) {
        b->ops[0].store->backend->cancel(b);
    }

    b->running = NULL;
}


ngx_int_t
ngx_http_idv_store_fallback(ngx_http_idv_store_batch_t *first)
{
    ngx_http_idv_store_in_order(first, ngx_http_idv_store_fallback_one);

    return NGX_OK;
}


/*
 * A group run one batch at a time, where it does not go in one round
 * trip: until a batch fails or declines; those after it are skipped.
 */

static void
ngx_http_idv_store_in_order(ngx_http_idv_store_batch_t *first,
    ngx_int_t (*run)(ngx_http_idv_store_batch_t *b))
{
    ngx_uint_t                   stop;
    ngx_http_idv_store_batch_t  *b;

    stop = 0;

    for (b = first; b; b = b->next) {
        if (stop) {
            b->skipped = 1;
            b->rc = NGX_DECLINED;
            continue;
        }

        (void) run(b);

        stop = (b->rc != NGX_OK || ngx_http_idv_store_declined(b));
    }
}


static ngx_int_t
ngx_http_idv_store_fallback_one(ngx_http_idv_store_batch_t *b)
{
    ngx_uint_t                   i, n;
    ngx_http_idv_store_op_t     *op, *local;
    ngx_http_idv_store_shctx_t  *sh;
    ngx_http_idv_store_batch_t   lb;

    n = 0;

    for (i = 0; i < b->nops; i++) {
        op = &b->ops[i];

        sh = op->store->data;
        (void) ngx_atomic_fetch_add(&sh->unavailable, 1);

        if (op->store->on_error == NGX_HTTP_IDV_STORE_CLOSED) {
            b->rc = NGX_ERROR;
            return NGX_OK;
        }

        if (op->store->on_error == NGX_HTTP_IDV_STORE_LOCAL) {
            n++;
        }
    }

    b->rc = NGX_OK;

    if (n == b->nops) {
        /* every zone runs it in its own memory, as one batch */
        (void) ngx_http_idv_store_shm_run(b);
        return NGX_OK;
    }

    local = NULL;

    if (n) {
        local = ngx_palloc(b->pool, n * sizeof(ngx_http_idv_store_op_t));
        if (local == NULL) {
            b->rc = NGX_ERROR;
            return NGX_OK;
        }
    }

    n = 0;

    for (i = 0; i < b->nops; i++) {
        op = &b->ops[i];

        if (op->store->on_error == NGX_HTTP_IDV_STORE_LOCAL) {
            local[n++] = *op;
            continue;
        }

        /* open: what an empty store that keeps nothing would say */

        op->rc = (op->op == NGX_HTTP_IDV_STORE_GET) ? NGX_DECLINED : NGX_OK;
        ngx_str_null(&op->result);
        op->number = (op->op == NGX_HTTP_IDV_STORE_INCR) ? op->delta
                     : (op->op == NGX_HTTP_IDV_STORE_BUCKET) ? (int64_t) op->cost
                     : 0;
        op->age = 0;
    }

    if (n == 0) {
        return NGX_OK;
    }

    ngx_memzero(&lb, sizeof(ngx_http_idv_store_batch_t));

    lb.ops = local;
    lb.nops = n;
    lb.pool = b->pool;
    lb.log = b->log;
    lb.atomic = b->atomic;

    (void) ngx_http_idv_store_shm_run(&lb);

    b->rc = lb.rc;

    n = 0;

    for (i = 0; i < b->nops; i++) {
        if (b->ops[i].store->on_error == NGX_HTTP_IDV_STORE_LOCAL) {
            b->ops[i] = local[n++];
        }
    }

    return NGX_OK;
}


void
ngx_http_idv_store_count_full(ngx_http_idv_store_t *st)
{
    ngx_http_idv_store_shctx_t  *sh;

    sh = st->data;

    (void) ngx_atomic_fetch_add(&sh->full, 1);
}


ngx_uint_t
ngx_http_idv_store_unavailable(ngx_http_idv_store_t *st)
{
    ngx_http_idv_store_shctx_t  *sh;

    sh = st->data;

    return sh ? (ngx_uint_t) sh->unavailable : 0;
}


static ngx_int_t
ngx_http_idv_store_shm_run(ngx_http_idv_store_batch_t *b)
{
    ngx_int_t                   rc, j;
    ngx_uint_t                  i, n, declined;
    ngx_msec_t                  now;
    ngx_slab_pool_t            *spools[NGX_HTTP_IDV_STORE_STACK], **pools;
    ngx_http_idv_store_op_t    *op;
    ngx_http_idv_store_plan_t   splan[NGX_HTTP_IDV_STORE_STACK], *plan, *p;

    if (b->nops <= NGX_HTTP_IDV_STORE_STACK) {
        plan = splan;
        pools = spools;

    } else {
        plan = ngx_palloc(b->pool,
                          b->nops * sizeof(ngx_http_idv_store_plan_t));
        pools = ngx_palloc(b->pool, b->nops * sizeof(ngx_slab_pool_t *));

        if (plan == NULL || pools == NULL) {
            b->rc = NGX_ERROR;
            return NGX_OK;
        }
    }

    ngx_memzero(plan, b->nops * sizeof(ngx_http_idv_store_plan_t));

    /* the hashes, and which operations share a key */

    for (i = 0; i < b->nops; i++) {
        op = &b->ops[i];
        p = &plan[i];

        p->shpool = (ngx_slab_pool_t *) op->store->shm_zone->shm.addr;
        p->sh = op->store->data;
        p->prev = -1;
        p->last = 1;

        ngx_http_idv_siphash(p->hash, NGX_HTTP_IDV_STORE_HASH_LEN,
                             op->key.data, op->key.len, p->sh->key);

        for (j = (ngx_int_t) i - 1; j >= 0; j--) {
            if (plan[j].sh == p->sh
                && ngx_memcmp(plan[j].hash, p->hash,
                              NGX_HTTP_IDV_STORE_HASH_LEN) == 0)
            {
                p->prev = j;
                plan[j].last = 0;
                break;
            }
        }
    }

    n = ngx_http_idv_store_lock(plan, b->nops, pools);

    now = ngx_current_msec;

    for (i = 0; i < n; i++) {
        (void) ngx_http_idv_store_reclaim(pools[i], now,
                                          NGX_HTTP_IDV_STORE_RECLAIM);
    }

    rc = NGX_OK;
    declined = 0;

    for (i = 0; i < b->nops; i++) {
        if (ngx_http_idv_store_eval(b, plan, i, now) != NGX_OK) {
            rc = NGX_ERROR;
            break;
        }

        op = &b->ops[i];

        if (op->rc == NGX_DECLINED
            && (op->op == NGX_HTTP_IDV_STORE_ADD
                || op->op == NGX_HTTP_IDV_STORE_CAS
                || op->op == NGX_HTTP_IDV_STORE_BUCKET
                || op->op == NGX_HTTP_IDV_STORE_CHECK))
        {
            declined = 1;
        }
    }

    if (rc == NGX_OK && !(b->atomic && declined)) {
        rc = ngx_http_idv_store_alloc(b, plan, now);

        if (rc == NGX_OK) {
            ngx_http_idv_store_apply(b, plan);
        }
    }

    while (n--) {
        ngx_shmtx_unlock(&pools[n]->mutex);
    }

    ngx_http_idv_store_log(b, plan);

#if (NGX_DEBUG)
    for (i = 0; i < b->nops; i++) {
        op = &b->ops[i];
        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, b->log, 0,
                       "idv store: zone \"%V\" operation %ui: %i, "
                       "%uz bytes, batch %i", &op->store->name, op->op,
                       op->rc, op->result.len, rc);
    }
#endif

    b->rc = rc;

    return NGX_OK;
}


/*
 * Every zone of the batch, each once, in address order: the same order in
 * every worker (zones are mapped before the fork), so no deadlock.
 */

static ngx_uint_t
ngx_http_idv_store_lock(ngx_http_idv_store_plan_t *plan, ngx_uint_t nops,
    ngx_slab_pool_t **pools)
{
    ngx_uint_t                   i, j, n;
    ngx_slab_pool_t             *sp;
    ngx_http_idv_store_shctx_t  *sh;

    n = 0;

    for (i = 0; i < nops; i++) {
        sp = plan[i].shpool;

        for (j = 0; j < n && (uintptr_t) pools[j] < (uintptr_t) sp; j++) {
            /* void */
        }

        if (j < n && pools[j] == sp) {
            continue;
        }

        ngx_memmove(&pools[j + 1], &pools[j],
                    (n - j) * sizeof(ngx_slab_pool_t *));
        pools[j] = sp;
        n++;
    }

    for (i = 0; i < n; i++) {
        ngx_shmtx_lock(&pools[i]->mutex);

        /* a new batch: what older ones held is free */
        sh = pools[i]->data;
        sh->batch = (sh->batch + 1) & NGX_HTTP_IDV_STORE_BATCH_MASK;
    }

    return n;
}


/*
 * Under the locks: what operation i finds and what its key holds after
 * it.  Nothing in the zone changes here but the LRU order.
 */

static ngx_int_t
ngx_http_idv_store_eval(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan, ngx_uint_t i, ngx_msec_t now)
{
    int64_t                     v;
    ngx_http_idv_store_op_t    *op;
    ngx_http_idv_store_node_t  *n;
    ngx_http_idv_store_plan_t  *p;

    op = &b->ops[i];
    p = &plan[i];

    if (p->prev >= 0) {
        /* the key's state as the batch left it */
        ngx_memcpy(p->buf, plan[p->prev].buf, sizeof(p->buf));
        p->node = plan[p->prev].node;
        p->data = plan[p->prev].data;
        p->len = plan[p->prev].len;
        p->written = plan[p->prev].written;
        p->expire = plan[p->prev].expire;
        p->exists = plan[p->prev].exists;
        p->keep = plan[p->prev].keep;
        p->expires = plan[p->prev].expires;
        p->dirty = plan[p->prev].dirty;

        if (p->data == plan[p->prev].buf) {
            p->data = p->buf;
        }

    } else {
        n = ngx_http_idv_store_lookup(p->sh, p->hash);
        p->node = n;

        if (n) {
            n->held = p->sh->batch;

            if (!n->expires
                || (ngx_msec_int_t) (n->expiry.key - now) > 0)
            {
                p->exists = 1;
                p->data = n->data;
                p->len = n->len;
                p->written = n->written;
                p->expire = n->expiry.key;
                p->keep = n->keep;
                p->expires = n->expires;

                if (!n->keep) {
                    ngx_queue_remove(&n->queue);
                    ngx_queue_insert_head(&p->sh->lru, &n->queue);
                }
            }
        }
    }

    op->rc = NGX_DECLINED;
    ngx_str_null(&op->result);
    op->number = 0;
    op->age = 0;

    switch (op->op) {

    case NGX_HTTP_IDV_STORE_GET:
        if (p->exists) {
            op->rc = NGX_OK;
            return ngx_http_idv_store_report(b, op, p, now);
        }

        break;

    case NGX_HTTP_IDV_STORE_CAS:
        if (!p->exists) {
            break;
        }

        if (!ngx_http_idv_store_is(p, &op->expect)) {
            return ngx_http_idv_store_report(b, op, p, now);
        }

        goto write;

    case NGX_HTTP_IDV_STORE_ADD:
        if (p->exists) {
            return ngx_http_idv_store_report(b, op, p, now);
        }

        /* fall through */

    case NGX_HTTP_IDV_STORE_SET:
    write:
        ngx_http_idv_store_write(p, op->value.data, op->value.len, op->ttl,
                                 op->keep, now);
        op->rc = NGX_OK;
        break;

    case NGX_HTTP_IDV_STORE_CHECK:
        if (!p->exists) {
            op->rc = op->present ? NGX_DECLINED : NGX_OK;
            break;
        }

        if (p->len >= op->expect.len
            && ngx_http_idv_memeq(p->data, op->expect.data, op->expect.len))
        {
            op->rc = NGX_OK;
        }

        return ngx_http_idv_store_report(b, op, p, now);

    case NGX_HTTP_IDV_STORE_DELETE:
        if (!p->exists
            || (op->expect.data && !ngx_http_idv_store_is(p, &op->expect)))
        {
            break;
        }

        p->exists = 0;
        p->dirty = 1;
        op->rc = NGX_OK;
        break;

    case NGX_HTTP_IDV_STORE_INCR:

        if (p->exists) {
            if (p->len != sizeof(int64_t)) {
                /* not a counter */
                break;
            }

            ngx_memcpy(&v, p->data, sizeof(int64_t));
            v = (int64_t) ((uint64_t) v + (uint64_t) op->delta);

            /* the counter keeps its lifetime and its class */
            ngx_memcpy(p->buf, &v, sizeof(int64_t));
            p->data = p->buf;
            p->written = now;
            p->dirty = 1;

        } else {
            v = op->delta;
            ngx_memcpy(p->buf, &v, sizeof(int64_t));
            ngx_http_idv_store_write(p, p->buf, sizeof(int64_t), op->ttl,
                                     op->keep, now);
        }

        op->number = v;
        op->rc = NGX_OK;
        break;

    default: /* NGX_HTTP_IDV_STORE_BUCKET */
        ngx_http_idv_store_bucket(op, p, now);
        break;
    }

    return NGX_OK;
}


/*
 * A leaky bucket as the limit module keeps it: milli-requests, drained
 * at "rate" milli-requests a minute.  Its value is its state (excess,
 * time of the last update), so that another backend can keep the same;
 * it lives until it has drained, and is never evicted.
 */

static void
ngx_http_idv_store_bucket(ngx_http_idv_store_op_t *op,
    ngx_http_idv_store_plan_t *p, ngx_msec_t now)
{
    int64_t         level, excess;
    uint64_t        state[2];
    ngx_msec_t      last, ttl;
    ngx_msec_int_t  ms;

    last = now;
    ms = 0;
    level = 0;

    if (p->exists) {
        if (p->len != sizeof(state)) {
            /* not a bucket */
            return;
        }

        ngx_memcpy(state, p->data, sizeof(state));

        ms = (ngx_msec_int_t) (now - (ngx_msec_t) state[1]);

        if (ms < -60000) {
            /* the clock went far back: count it as a fresh millisecond */
            ms = 1;

        } else if (ms < 0) {
            ms = 0;
        }

        /* an hour drains any bucket: keeps rate * ms far from overflowing */

        level = (int64_t) state[0]
                - (int64_t) ((uint64_t) op->rate
                             * (uint64_t) ngx_min(ms, 3600000) / 60000);

        if (ms == 0) {
            last = (ngx_msec_t) state[1];
        }
    }

    if (op->fill) {
        /* the upstream said Throttling: at least "cost", refuse nothing */

        op->rc = NGX_OK;
        op->number = ngx_max(level, 0);

        if (op->cost == 0 || level >= (int64_t) op->cost) {
            return;
        }

        excess = (int64_t) op->cost;
        last = now;

    } else {
        excess = level + (int64_t) op->cost;

        if (excess < 0) {
            excess = 0;
        }

        op->number = excess;

        if (excess > (int64_t) op->burst) {
            return;
        }

        op->rc = NGX_OK;

        if (op->cost == 0) {
            return;
        }
    }

    op->number = excess;

    state[0] = (uint64_t) excess;
    state[1] = (uint64_t) last;

    /* the time it takes to drain, at least a millisecond */

    ttl = (ngx_msec_t) (((uint64_t) excess * 60000 + op->rate - 1)
                        / op->rate);

    ngx_memcpy(p->buf, state, sizeof(state));
    ngx_http_idv_store_write(p, p->buf, sizeof(state), ngx_max(ttl, 1), 1,
                             now);
}


static void
ngx_http_idv_store_write(ngx_http_idv_store_plan_t *p, u_char *data,
    size_t len, ngx_msec_t ttl, ngx_uint_t keep, ngx_msec_t now)
{
    p->data = data;
    p->len = len;
    p->written = now;
    p->expire = now + ttl;
    p->expires = (ttl != 0);
    p->keep = keep ? 1 : 0;
    p->exists = 1;
    p->dirty = 1;
}


/* the value and age an operation found, copied into the batch's pool */

static ngx_int_t
ngx_http_idv_store_report(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_op_t *op, ngx_http_idv_store_plan_t *p,
    ngx_msec_t now)
{
    op->result.data = ngx_pnalloc(b->pool, ngx_max(p->len, 1));
    if (op->result.data == NULL) {
        return NGX_ERROR;
    }

    if (p->len) {
        ngx_memcpy(op->result.data, p->data, p->len);
    }
    op->result.len = p->len;

    op->age = ((ngx_msec_int_t) (now - p->written) > 0) ? now - p->written
                                                         : 0;

    return NGX_OK;
}


/*
 * The memory every write needs, before anything is applied; an entry
 * rewritten with a value of the same length keeps its memory.  A zone
 * without room fails the batch: what was taken is given back.
 */

static ngx_int_t
ngx_http_idv_store_alloc(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan, ngx_msec_t now)
{
    ngx_uint_t                  i, j;
    ngx_http_idv_store_plan_t  *p;

    for (i = 0; i < b->nops; i++) {
        p = &plan[i];

        if (!p->last || !p->dirty || !p->exists
            || (p->node && p->node->len == p->len))
        {
            continue;
        }

        p->fresh = ngx_http_idv_store_room(p,
                             offsetof(ngx_http_idv_store_node_t, data)
                             + p->len, now);

        if (p->fresh) {
            continue;
        }

        for (j = 0; j < i; j++) {
            if (plan[j].fresh) {
                ngx_slab_free_locked(plan[j].shpool, plan[j].fresh);
                plan[j].fresh = NULL;
            }
        }

        p->sh->full++;

        if (ngx_time() - p->sh->full_logged >= NGX_HTTP_IDV_STORE_LOG_FULL) {
            p->sh->full_logged = ngx_time();
            p->log_full = 1;
        }

        return NGX_HTTP_IDV_STORE_FULL;
    }

    return NGX_OK;
}


/*
 * Memory for one entry: what is free, else what expired entries held,
 * else what the least recently used entries without "keep" hold.
 */

static void *
ngx_http_idv_store_room(ngx_http_idv_store_plan_t *p, size_t size,
    ngx_msec_t now)
{
    void  *m;

    m = ngx_slab_alloc_locked(p->shpool, size);

    if (m || size > (size_t) (p->shpool->end - p->shpool->start)) {
        return m;
    }

    if (ngx_http_idv_store_reclaim(p->shpool, now, NGX_MAX_UINT32_VALUE)) {
        m = ngx_slab_alloc_locked(p->shpool, size);
    }

    while (m == NULL && ngx_http_idv_store_evict(p->shpool)) {
        m = ngx_slab_alloc_locked(p->shpool, size);

        if (ngx_time() - p->sh->evict_logged
            >= NGX_HTTP_IDV_STORE_LOG_EVICT)
        {
            p->sh->evict_logged = ngx_time();
            p->log_evict = 1;
        }
    }

    return m;
}


/* the final state of every key the batch wrote */

static void
ngx_http_idv_store_apply(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan)
{
    ngx_uint_t                  i;
    ngx_http_idv_store_node_t  *n;
    ngx_http_idv_store_plan_t  *p;

    for (i = 0; i < b->nops; i++) {
        p = &plan[i];

        if (!p->last || !p->dirty) {
            continue;
        }

        n = p->node;

        if (n && (!p->exists || p->fresh)) {
            ngx_http_idv_store_delete(p->shpool, n);
            p->node = NULL;
            n = NULL;
        }

        if (!p->exists) {
            continue;
        }

        if (n) {
            ngx_http_idv_store_unlink(p->sh, n);

        } else {
            n = p->fresh;

            ngx_memcpy(n->hash, p->hash, NGX_HTTP_IDV_STORE_HASH_LEN);
            n->node.key = ngx_http_idv_store_key(p->hash);
            n->len = (uint32_t) p->len;
            n->held = (p->sh->batch - 1) & NGX_HTTP_IDV_STORE_BATCH_MASK;

            ngx_rbtree_insert(&p->sh->rbtree, &n->node);
            p->sh->entries++;
        }

        if (p->len) {
            ngx_memmove(n->data, p->data, p->len);
        }

        n->written = p->written;
        n->expiry.key = p->expire;
        n->expires = p->expires;
        n->keep = p->keep;

        ngx_http_idv_store_link(p->sh, n);
    }
}


/* up to max expired entries, the oldest first; the batch's own stay */

static ngx_uint_t
ngx_http_idv_store_reclaim(ngx_slab_pool_t *shpool, ngx_msec_t now,
    ngx_uint_t max)
{
    ngx_uint_t                   n;
    ngx_rbtree_node_t           *node, *next, *sentinel;
    ngx_http_idv_store_node_t   *e;
    ngx_http_idv_store_shctx_t  *sh;

    sh = shpool->data;
    sentinel = sh->expiry.sentinel;

    if (sh->expiry.root == sentinel) {
        return 0;
    }

    node = ngx_rbtree_min(sh->expiry.root, sentinel);
    n = 0;

    while (node && n < max && (ngx_msec_int_t) (node->key - now) <= 0) {
        next = ngx_rbtree_next(&sh->expiry, node);

        e = (ngx_http_idv_store_node_t *)
                ((u_char *) node - offsetof(ngx_http_idv_store_node_t,
                                            expiry));

        if (!ngx_http_idv_store_held(sh, e)) {
            ngx_http_idv_store_delete(shpool, e);
            n++;
        }

        node = next;
    }

    return n;
}


/* the least recently used entry without "keep" the batch does not hold */

static ngx_uint_t
ngx_http_idv_store_evict(ngx_slab_pool_t *shpool)
{
    ngx_queue_t                 *q;
    ngx_http_idv_store_node_t   *e;
    ngx_http_idv_store_shctx_t  *sh;

    sh = shpool->data;

    for (q = ngx_queue_last(&sh->lru);
         q != ngx_queue_sentinel(&sh->lru);
         q = ngx_queue_prev(q))
    {
        e = ngx_queue_data(q, ngx_http_idv_store_node_t, queue);

        if (!ngx_http_idv_store_held(sh, e)) {
            ngx_http_idv_store_delete(shpool, e);
            sh->evicted++;
            return 1;
        }
    }

    return 0;
}


static ngx_http_idv_store_node_t *
ngx_http_idv_store_lookup(ngx_http_idv_store_shctx_t *sh, u_char *hash)
{
    ngx_int_t                   rc;
    ngx_rbtree_key_t            key;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_idv_store_node_t  *n;

    key = ngx_http_idv_store_key(hash);

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        n = (ngx_http_idv_store_node_t *) node;

        rc = ngx_memcmp(hash, n->hash, NGX_HTTP_IDV_STORE_HASH_LEN);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* into the expiry tree if it expires, into the LRU queue unless kept */

static void
ngx_http_idv_store_link(ngx_http_idv_store_shctx_t *sh,
    ngx_http_idv_store_node_t *n)
{
    if (n->expires) {
        ngx_rbtree_insert(&sh->expiry, &n->expiry);
    }

    if (!n->keep) {
        ngx_queue_insert_head(&sh->lru, &n->queue);
    }
}


static void
ngx_http_idv_store_unlink(ngx_http_idv_store_shctx_t *sh,
    ngx_http_idv_store_node_t *n)
{
    if (n->expires) {
        ngx_rbtree_delete(&sh->expiry, &n->expiry);
    }

    if (!n->keep) {
        ngx_queue_remove(&n->queue);
    }
}


static void
ngx_http_idv_store_delete(ngx_slab_pool_t *shpool,
    ngx_http_idv_store_node_t *n)
{
    ngx_http_idv_store_shctx_t  *sh;

    sh = shpool->data;

    ngx_http_idv_store_unlink(sh, n);
    ngx_rbtree_delete(&sh->rbtree, &n->node);
    ngx_slab_free_locked(shpool, n);

    sh->entries--;
}


/* the hash's first bytes, most significant first: the tree's order is
   the hashes' byte order */

static ngx_rbtree_key_t
ngx_http_idv_store_key(u_char *hash)
{
    ngx_uint_t        i;
    ngx_rbtree_key_t  key;

    key = 0;

    for (i = 0; i < sizeof(ngx_rbtree_key_t); i++) {
        key = (key << 8) | hash[i];
    }

    return key;
}


static void
ngx_http_idv_store_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_idv_store_node_t   *n, *t;

    n = (ngx_http_idv_store_node_t *) node;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            t = (ngx_http_idv_store_node_t *) temp;

            p = (ngx_memcmp(n->hash, t->hash, NGX_HTTP_IDV_STORE_HASH_LEN)
                 < 0) ? &temp->left : &temp->right;
        }

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


/* after the locks: a full zone (at most every 10 s), evictions (a minute) */

static void
ngx_http_idv_store_log(ngx_http_idv_store_batch_t *b,
    ngx_http_idv_store_plan_t *plan)
{
    ngx_uint_t             i;
    ngx_http_idv_store_t  *st;

    for (i = 0; i < b->nops; i++) {
        st = b->ops[i].store;

        if (plan[i].log_full) {
            ngx_log_error(NGX_LOG_ERR, b->log, 0,
                          "idv %s zone \"%V\" is full: the entries it must "
                          "keep leave no room for this one "
                          "(logged at most every %d s; consider a larger "
                          "zone)", st->kind, &st->name,
                          NGX_HTTP_IDV_STORE_LOG_FULL);
        }

        if (plan[i].log_evict) {
            ngx_log_error(NGX_LOG_WARN, b->log, 0,
                          "idv %s zone \"%V\" is full: %uA entries that "
                          "need not be kept were evicted so far to make "
                          "room (logged at most once a minute; consider a "
                          "larger zone)", st->kind, &st->name,
                          ngx_http_idv_store_shm_evicted(st));
        }
    }
}


/* what the backend tells metrics */

double
ngx_http_idv_store_slab_used(ngx_shm_zone_t *shm_zone)
{
    ngx_uint_t        total, used;
    ngx_slab_pool_t  *pool;

    pool = (ngx_slab_pool_t *) shm_zone->shm.addr;
    total = (pool->end - pool->start) >> ngx_pagesize_shift;

    ngx_shmtx_lock(&pool->mutex);
    used = total - pool->pfree;
    ngx_shmtx_unlock(&pool->mutex);

    return total ? (double) used / total : 0;
}


static double
ngx_http_idv_store_shm_used(ngx_http_idv_store_t *st)
{
    return ngx_http_idv_store_slab_used(st->shm_zone);
}


ngx_uint_t
ngx_http_idv_store_full(ngx_http_idv_store_t *st)
{
    ngx_http_idv_store_shctx_t  *sh = st->data;

    return sh->full;
}


static ngx_uint_t
ngx_http_idv_store_shm_evicted(ngx_http_idv_store_t *st)
{
    ngx_http_idv_store_shctx_t  *sh = st->data;

    return sh->evicted;
}


static ngx_uint_t
ngx_http_idv_store_shm_entries(ngx_http_idv_store_t *st)
{
    ngx_http_idv_store_shctx_t  *sh = st->data;

    return sh->entries;
}
