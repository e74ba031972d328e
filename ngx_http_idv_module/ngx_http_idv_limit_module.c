
/*
 * ngx_http_idv_limit_module: per-tenant QPS limits and an account-wide
 * ceiling per product, in shared memory.
 *
 * Each idv_limit rule keeps a leaky bucket per key in a shared-memory
 * zone, counted in milli-requests the way limit_req counts them: a
 * request adds 1000, the bucket leaks "rate" per second, a request that
 * would take it over "burst" is refused.  The key is the tenant and the
 * product (key=tenant), the product alone (key=product: the account's
 * per-product quota, shared by all tenants), or nothing (key=account).
 *
 * All zones a request touches are locked together, in address order, so
 * that checking every rule and then charging every rule is one step for
 * all workers: a request refused by one rule costs nothing in the others.
 * Buckets sit in an rbtree keyed by a hash and in an LRU queue; drained
 * ones are reclaimed as new ones arrive, and a full zone gives up its
 * least recently used buckets (logged once a minute), or, failing that,
 * lets the request through unlimited: the zone never fails a request.
 */


#include "ngx_http_idv_module.h"


#define NGX_HTTP_IDV_LIMIT_PASSED            1
#define NGX_HTTP_IDV_LIMIT_DELAYED           2
#define NGX_HTTP_IDV_LIMIT_REJECTED          3
#define NGX_HTTP_IDV_LIMIT_DELAYED_DRY_RUN   4
#define NGX_HTTP_IDV_LIMIT_REJECTED_DRY_RUN  5

/* the first byte of a bucket's key */
#define NGX_HTTP_IDV_LIMIT_TENANT            't'
#define NGX_HTTP_IDV_LIMIT_PRODUCT           'p'
#define NGX_HTTP_IDV_LIMIT_ACCOUNT           'a'

/* the zones of one level's rules are locked together */
#define NGX_HTTP_IDV_LIMIT_MAX_RULES         8

/* rates are kept in milli-requests per minute (exact for r/m too): the
   largest fits the 32 bits a bucket keeps */
#define NGX_HTTP_IDV_LIMIT_MAX_RATE          50000       /* r/s */
#define NGX_HTTP_IDV_LIMIT_MAX_BURST         1000000

/* buckets a full zone gives up, at most, to make room for one */
#define NGX_HTTP_IDV_LIMIT_EVICT             16

/* a full zone and a bad variable rate are logged once a minute */
#define NGX_HTTP_IDV_LIMIT_LOG_EVERY         60


typedef struct {
    u_char                       color;
    u_char                       dummy;
    u_short                      len;
    /* the rate of the last update, milli-requests per minute: tells
       whether the bucket has drained and may be reclaimed */
    uint32_t                     rate;
    ngx_queue_t                  queue;
    ngx_msec_t                   last;
    /* milli-requests ahead of the rate; 1000 is one request */
    ngx_uint_t                   excess;
    u_char                       data[1];
} ngx_http_idv_limit_node_t;


typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  queue;
    time_t                       evict_logged;
    time_t                       nomem_logged;
    ngx_atomic_t                 invalid_logged;    /* without the lock */
} ngx_http_idv_limit_shctx_t;


/* shm_zone->data */
typedef struct {
    ngx_http_idv_limit_shctx_t  *sh;
    ngx_slab_pool_t             *shpool;
    ngx_cycle_t                 *cycle;     /* to find the zone replaced */
} ngx_http_idv_limit_zone_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_uint_t                   key;       /* NGX_HTTP_IDV_LIMIT_TENANT...*/
    ngx_uint_t                   rate;      /* milli-r/min; 0: variable */
    ngx_http_complex_value_t    *rate_value;
    ngx_uint_t                   burst;     /* milli-requests */
    ngx_flag_t                   nodelay;
} ngx_http_idv_limit_rule_t;


typedef struct {
    ngx_array_t                  rules;     /* ngx_http_idv_limit_rule_t */
    ngx_uint_t                   log_level;
    ngx_flag_t                   headers;
    ngx_flag_t                   dry_run;
} ngx_http_idv_limit_loc_conf_t;


/* one rule as it applies to one request */
typedef struct {
    ngx_http_idv_limit_rule_t   *rule;
    ngx_http_idv_limit_zone_t   *zone;
    ngx_str_t                    key;
    uint32_t                     hash;
    ngx_uint_t                   rate;

    ngx_http_idv_limit_node_t   *node;      /* valid under the lock only */
    ngx_msec_int_t               ms;        /* since the bucket's update */
    ngx_uint_t                   excess;    /* with this request */

    unsigned                     reject:1;
    unsigned                     evicted:1; /* log it */
    unsigned                     nomem:1;   /* log it */
} ngx_http_idv_limit_hit_t;


/* the request's, ngx_http_get_module_ctx() */
typedef struct {
    ngx_uint_t                   status;    /* NGX_HTTP_IDV_LIMIT_* */
    ngx_http_idv_limit_hit_t    *hits;
    ngx_uint_t                   nhits;
    ngx_event_t                  delay;
} ngx_http_idv_limit_ctx_t;


static ngx_int_t ngx_http_idv_limit_handler(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_limit_prepare(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_rule_t *rule,
    ngx_http_idv_limit_hit_t *hit);
static ngx_uint_t ngx_http_idv_limit_parse_rate(u_char *p, size_t len);
static ngx_str_t *ngx_http_idv_limit_product(ngx_http_idv_ctx_t *ctx);
static ngx_uint_t ngx_http_idv_limit_lock(ngx_http_idv_limit_ctx_t *lctx,
    ngx_slab_pool_t **pools);
static void ngx_http_idv_limit_unlock(ngx_slab_pool_t **pools, ngx_uint_t n);
static ngx_uint_t ngx_http_idv_limit_check(ngx_http_idv_limit_ctx_t *lctx,
    ngx_msec_t now);
static void ngx_http_idv_limit_account(ngx_http_idv_limit_ctx_t *lctx,
    ngx_msec_t now);
static ngx_int_t ngx_http_idv_limit_decide(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_loc_conf_t *lcf,
    ngx_http_idv_limit_ctx_t *lctx, ngx_uint_t reject);
static ngx_int_t ngx_http_idv_limit_headers(ngx_http_request_t *r,
    ngx_http_idv_limit_hit_t *hit, ngx_uint_t retry);
static ngx_int_t ngx_http_idv_limit_header(ngx_http_request_t *r,
    const char *name, ngx_uint_t n);
static void ngx_http_idv_limit_log(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t level, const char *what,
    ngx_http_idv_limit_hit_t *hit);
static void ngx_http_idv_limit_delay_handler(ngx_event_t *ev);
static void ngx_http_idv_limit_delay_cleanup(void *data);
static ngx_int_t ngx_http_idv_limit_answer(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);

static ngx_int_t ngx_http_idv_limit_level(ngx_http_idv_limit_node_t *lr,
    ngx_uint_t rate, ngx_msec_t now, ngx_msec_int_t *msp);
static ngx_http_idv_limit_node_t *ngx_http_idv_limit_lookup(
    ngx_http_idv_limit_zone_t *zone, ngx_str_t *key, uint32_t hash);
static ngx_http_idv_limit_node_t *ngx_http_idv_limit_create(
    ngx_http_idv_limit_ctx_t *lctx, ngx_http_idv_limit_hit_t *hit,
    ngx_msec_t now);
static ngx_http_idv_limit_node_t *ngx_http_idv_limit_oldest(
    ngx_http_idv_limit_ctx_t *lctx, ngx_http_idv_limit_zone_t *zone);
static void ngx_http_idv_limit_free(ngx_http_idv_limit_zone_t *zone,
    ngx_http_idv_limit_node_t *lr);
static void ngx_http_idv_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_idv_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);

static ngx_int_t ngx_http_idv_limit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_idv_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_idv_limit_init(ngx_conf_t *cf);
static void *ngx_http_idv_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idv_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_enum_t  ngx_http_idv_limit_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_idv_limit_commands[] = {

    { ngx_string("idv_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_limit_zone,
      0,
      0,
      NULL },

    { ngx_string("idv_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_idv_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_limit_loc_conf_t, headers),
      NULL },

    { ngx_string("idv_limit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_limit_loc_conf_t, dry_run),
      NULL },

    { ngx_string("idv_limit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_limit_loc_conf_t, log_level),
      &ngx_http_idv_limit_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_limit_module_ctx = {
    ngx_http_idv_limit_add_variables,      /* preconfiguration */
    ngx_http_idv_limit_init,               /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idv_limit_create_loc_conf,    /* create location configuration */
    ngx_http_idv_limit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_idv_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_limit_module_ctx,        /* module context */
    ngx_http_idv_limit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_idv_limit_vars[] = {

    { ngx_string("idv_limit_status"), NULL,
      ngx_http_idv_limit_status_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_idv_limit_status[] = {
    ngx_string("PASSED"),
    ngx_string("DELAYED"),
    ngx_string("REJECTED"),
    ngx_string("DELAYED_DRY_RUN"),
    ngx_string("REJECTED_DRY_RUN")
};


/* the stage hook: NGX_OK to go on, NGX_AGAIN while delayed, or a 429 */

static ngx_int_t
ngx_http_idv_limit_handler(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i, npools, reject;
    ngx_msec_t                      now;
    ngx_slab_pool_t                *pools[NGX_HTTP_IDV_LIMIT_MAX_RULES];
    ngx_http_idv_limit_hit_t       *hit;
    ngx_http_idv_limit_ctx_t       *lctx;
    ngx_http_idv_limit_rule_t      *rules;
    ngx_http_idv_limit_loc_conf_t  *lcf;

    lctx = ngx_http_get_module_ctx(r, ngx_http_idv_limit_module);

    if (lctx) {
        /* woken up when the delay is over */
        return lctx->delay.timer_set ? NGX_AGAIN : NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_limit_module);

    if (lcf->rules.nelts == 0) {
        return NGX_DECLINED;
    }

    lctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_limit_ctx_t)
                                + lcf->rules.nelts
                                  * sizeof(ngx_http_idv_limit_hit_t));
    if (lctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lctx->hits = (ngx_http_idv_limit_hit_t *) &lctx[1];
    ngx_http_set_ctx(r, lctx, ngx_http_idv_limit_module);

    rules = lcf->rules.elts;

    for (i = 0; i < lcf->rules.nelts; i++) {
        hit = &lctx->hits[lctx->nhits];

        rc = ngx_http_idv_limit_prepare(r, ctx, &rules[i], hit);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            lctx->nhits++;
        }
    }

    if (lctx->nhits == 0) {
        return NGX_DECLINED;
    }

    npools = ngx_http_idv_limit_lock(lctx, pools);

    now = ngx_current_msec;

    reject = ngx_http_idv_limit_check(lctx, now);

    if (!reject) {
        ngx_http_idv_limit_account(lctx, now);
    }

    ngx_http_idv_limit_unlock(pools, npools);

    return ngx_http_idv_limit_decide(r, ctx, lcf, lctx, reject);
}


/*
 * The rate and key of one rule for this request.  NGX_DECLINED: the rule
 * does not apply (an empty variable rate exempts; an invalid one is
 * logged and exempts too, so that a typo in a map does not lock a tenant
 * out).
 */

static ngx_int_t
ngx_http_idv_limit_prepare(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_rule_t *rule, ngx_http_idv_limit_hit_t *hit)
{
    u_char                      *p;
    size_t                       len;
    ngx_str_t                    value, *name;
    ngx_atomic_uint_t            last;
    ngx_http_idv_limit_shctx_t  *sh;

    hit->rule = rule;
    hit->zone = rule->shm_zone->data;
    hit->rate = rule->rate;

    if (rule->rate_value) {
        if (ngx_http_complex_value(r, rule->rate_value, &value) != NGX_OK) {
            return NGX_ERROR;
        }

        if (value.len == 0) {
            return NGX_DECLINED;
        }

        hit->rate = ngx_http_idv_limit_parse_rate(value.data, value.len);

        if (hit->rate == 0) {
            sh = hit->zone->sh;
            last = sh->invalid_logged;

            if ((ngx_atomic_uint_t) ngx_time() - last
                >= NGX_HTTP_IDV_LIMIT_LOG_EVERY
                && ngx_atomic_cmp_set(&sh->invalid_logged, last,
                                      (ngx_atomic_uint_t) ngx_time()))
            {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "idv_limit: invalid rate \"%V\" from \"%V\" "
                              "for zone \"%V\", the rule is not applied "
                              "(logged once a minute)",
                              &value, &rule->rate_value->value,
                              &rule->shm_zone->shm.name);
            }

            return NGX_DECLINED;
        }
    }

    /*
     * key: kind, then for tenant and product buckets the product code
     * (or, for actions without one such as CheckResult, the action's
     * name) with its length in front, then the tenant
     */

    name = ngx_http_idv_limit_product(ctx);

    switch (rule->key) {

    case NGX_HTTP_IDV_LIMIT_ACCOUNT:
        len = 1;
        break;

    case NGX_HTTP_IDV_LIMIT_PRODUCT:
        len = 4 + name->len;
        break;

    default: /* NGX_HTTP_IDV_LIMIT_TENANT */
        len = 4 + name->len + ctx->tenant.len;
        break;
    }

    if (len > 65535) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idv_limit: the key for zone \"%V\" is longer than "
                      "65535 bytes, the rule is not applied",
                      &rule->shm_zone->shm.name);
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    hit->key.data = p;
    hit->key.len = len;

    *p++ = (u_char) rule->key;

    if (rule->key != NGX_HTTP_IDV_LIMIT_ACCOUNT) {
        *p++ = (u_char) (ctx->req.product.len ? 'P' : 'A');
        *p++ = (u_char) (name->len >> 8);
        *p++ = (u_char) (name->len & 0xff);
        p = ngx_cpymem(p, name->data, name->len);
    }

    if (rule->key == NGX_HTTP_IDV_LIMIT_TENANT) {
        ngx_memcpy(p, ctx->tenant.data, ctx->tenant.len);
    }

    hit->hash = ngx_crc32_short(hit->key.data, hit->key.len);

    return NGX_OK;
}


/* "10r/s", "600r/m" or "10" (per second): milli-r/min, 0 if invalid */

static ngx_uint_t
ngx_http_idv_limit_parse_rate(u_char *p, size_t len)
{
    ngx_int_t   rate;
    ngx_uint_t  scale;

    scale = 60;

    if (len > 3 && ngx_strncmp(p + len - 3, "r/s", 3) == 0) {
        len -= 3;

    } else if (len > 3 && ngx_strncmp(p + len - 3, "r/m", 3) == 0) {
        scale = 1;
        len -= 3;
    }

    rate = ngx_atoi(p, len);

    if (rate <= 0
        || (ngx_uint_t) rate > NGX_HTTP_IDV_LIMIT_MAX_RATE * 60 / scale)
    {
        return 0;
    }

    return (ngx_uint_t) rate * 1000 * scale;
}


/* the product code, or for actions without one the action's name */

static ngx_str_t *
ngx_http_idv_limit_product(ngx_http_idv_ctx_t *ctx)
{
    static ngx_str_t  none = ngx_null_string;

    if (ctx->req.product.len) {
        return ngx_http_idv_ngx_str(&ctx->req.product);
    }

    if (ctx->conf->op) {
        return ngx_http_idv_ngx_str(&ctx->conf->op->name);
    }

    return &none;
}


/*
 * Every zone of the request, each once, in address order: the same order
 * in every worker (zones are mapped before the fork), so no deadlock.
 */

static ngx_uint_t
ngx_http_idv_limit_lock(ngx_http_idv_limit_ctx_t *lctx,
    ngx_slab_pool_t **pools)
{
    ngx_uint_t        i, j, n;
    ngx_slab_pool_t  *sp;

    n = 0;

    for (i = 0; i < lctx->nhits; i++) {
        sp = lctx->hits[i].zone->shpool;

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
    }

    return n;
}


static void
ngx_http_idv_limit_unlock(ngx_slab_pool_t **pools, ngx_uint_t n)
{
    while (n--) {
        ngx_shmtx_unlock(&pools[n]->mutex);
    }
}


/*
 * Under the locks: what each bucket would hold with this request; true
 * if a rule refuses it.  Nothing is written but the LRU order.
 */

static ngx_uint_t
ngx_http_idv_limit_check(ngx_http_idv_limit_ctx_t *lctx, ngx_msec_t now)
{
    ngx_int_t                   excess;
    ngx_uint_t                  i, reject;
    ngx_http_idv_limit_hit_t   *hit;
    ngx_http_idv_limit_node_t  *lr;

    reject = 0;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        lr = ngx_http_idv_limit_lookup(hit->zone, &hit->key, hit->hash);

        hit->node = lr;

        if (lr == NULL) {
            /* a new bucket starts empty, as in limit_req */
            hit->excess = 0;
            continue;
        }

        ngx_queue_remove(&lr->queue);
        ngx_queue_insert_head(&hit->zone->sh->queue, &lr->queue);

        excess = ngx_http_idv_limit_level(lr, hit->rate, now, &hit->ms)
                 + 1000;

        hit->excess = (excess > 0) ? (ngx_uint_t) excess : 0;

        if (hit->excess > hit->rule->burst) {
            hit->reject = 1;
            reject = 1;
        }
    }

    return reject;
}


/* under the locks, when every rule lets the request pass: charge them */

static void
ngx_http_idv_limit_account(ngx_http_idv_limit_ctx_t *lctx, ngx_msec_t now)
{
    ngx_uint_t                  i;
    ngx_http_idv_limit_hit_t   *hit;
    ngx_http_idv_limit_node_t  *lr;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        lr = hit->node;

        if (lr == NULL) {
            lr = ngx_http_idv_limit_create(lctx, hit, now);

            if (lr == NULL) {
                /* the zone is full: this rule lets the request through */
                continue;
            }

            hit->node = lr;
            lr->last = now;

        } else if (hit->ms) {
            lr->last = now;
        }

        lr->excess = hit->excess;
        lr->rate = (uint32_t) hit->rate;
    }
}


static ngx_int_t
ngx_http_idv_limit_decide(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_loc_conf_t *lcf, ngx_http_idv_limit_ctx_t *lctx,
    ngx_uint_t reject)
{
    size_t                     size;
    const char                *message;
    ngx_uint_t                 i, level, least;
    ngx_msec_t                 delay, d, wait, w;
    ngx_pool_cleanup_t        *cln;
    ngx_http_idv_limit_hit_t  *hit, *shown, *delaying;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        if (hit->evicted) {
            /* what the slab allocator gives a bucket with this key */

            for (size = 8;
                 size < offsetof(ngx_rbtree_node_t, color)
                        + offsetof(ngx_http_idv_limit_node_t, data)
                        + hit->key.len;
                 size <<= 1)
            {
                /* void */
            }

            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idv_limit: zone \"%V\" is full, the least "
                          "recently used buckets were evicted (%uz bytes "
                          "a bucket): make the zone larger "
                          "(logged once a minute)",
                          &hit->rule->shm_zone->shm.name, size);
        }

        if (hit->nomem) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idv_limit: zone \"%V\" is full and has no room "
                          "for a new bucket, requests pass unlimited by it: "
                          "make the zone larger (logged once a minute)",
                          &hit->rule->shm_zone->shm.name);
        }
    }

    if (reject) {

        /* the refusing rule that frees up last speaks for all */

        shown = NULL;
        wait = 0;

        for (i = 0; i < lctx->nhits; i++) {
            hit = &lctx->hits[i];

            if (!hit->reject) {
                continue;
            }

            w = ((ngx_msec_t) (hit->excess - hit->rule->burst) * 60000
                 + hit->rate - 1)
                / hit->rate;

            if (shown == NULL || w > wait) {
                wait = w;
                shown = hit;
            }
        }

        ngx_http_idv_limit_log(r, ctx, lcf->log_level,
                               lcf->dry_run ? "limiting requests, dry run"
                                            : "limiting requests",
                               shown);

        if (lcf->dry_run) {
            lctx->status = NGX_HTTP_IDV_LIMIT_REJECTED_DRY_RUN;

            if (lcf->headers
                && ngx_http_idv_limit_headers(r, shown, 0) != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return NGX_OK;
        }

        lctx->status = NGX_HTTP_IDV_LIMIT_REJECTED;

        if (ngx_http_idv_limit_headers(r, shown, (wait + 999) / 1000)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        switch (shown->rule->key) {

        case NGX_HTTP_IDV_LIMIT_ACCOUNT:
            message = "Too many requests for the account; retry after the "
                      "seconds in Retry-After";
            break;

        case NGX_HTTP_IDV_LIMIT_PRODUCT:
            message = "Too many requests for this product across all "
                      "tenants; retry after the seconds in Retry-After";
            break;

        default: /* NGX_HTTP_IDV_LIMIT_TENANT */
            message = "Too many requests for this tenant; retry after the "
                      "seconds in Retry-After";
            break;
        }

        return ngx_http_idv_error(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                  "Gateway.Throttled", message);
    }

    /*
     * passed: the delay is the longest that a rule without nodelay asks
     * for; the headers show the rule with the least room left
     */

    delay = 0;
    delaying = NULL;
    shown = NULL;
    least = 0;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        if (!hit->rule->nodelay) {
            d = (ngx_msec_t) hit->excess * 60000 / hit->rate;

            if (d > delay) {
                delay = d;
                delaying = hit;
            }
        }

        level = (hit->rule->burst - hit->excess) / 1000;

        if (shown == NULL || level < least) {
            least = level;
            shown = hit;
        }
    }

    if (lcf->headers && ngx_http_idv_limit_headers(r, shown, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (delaying == NULL) {
        lctx->status = NGX_HTTP_IDV_LIMIT_PASSED;
        return NGX_OK;
    }

    ngx_http_idv_limit_log(r, ctx,
                           lcf->log_level == NGX_LOG_INFO
                           ? NGX_LOG_INFO : lcf->log_level + 1,
                           lcf->dry_run ? "delaying request, dry run"
                                        : "delaying request",
                           delaying);

    if (lcf->dry_run) {
        lctx->status = NGX_HTTP_IDV_LIMIT_DELAYED_DRY_RUN;
        return NGX_OK;
    }

    lctx->status = NGX_HTTP_IDV_LIMIT_DELAYED;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_idv_limit_delay_cleanup;
    cln->data = lctx;

    lctx->delay.handler = ngx_http_idv_limit_delay_handler;
    lctx->delay.data = r;
    lctx->delay.log = r->connection->log;

    ngx_add_timer(&lctx->delay, delay);

    return NGX_AGAIN;
}


/*
 * RateLimit-Limit: requests an idle bucket admits at once (burst + 1);
 * RateLimit-Remaining: requests it admits now; RateLimit-Reset: seconds
 * until it is idle again.  Retry-After only on a refusal.
 */

static ngx_int_t
ngx_http_idv_limit_headers(ngx_http_request_t *r,
    ngx_http_idv_limit_hit_t *hit, ngx_uint_t retry)
{
    ngx_uint_t  burst, remaining, reset, used;

    burst = hit->rule->burst;

    if (hit->reject) {
        /* nothing was charged: the bucket holds excess - 1000 */
        remaining = 0;
        used = hit->excess;

    } else {
        remaining = (burst - hit->excess) / 1000;
        used = hit->excess + 1000;
    }

    reset = (((ngx_msec_t) used * 60000 + hit->rate - 1) / hit->rate + 999)
            / 1000;

    if (retry) {
        if (ngx_http_idv_limit_header(r, "Retry-After", retry) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_idv_limit_header(r, "RateLimit-Limit", burst / 1000 + 1)
        != NGX_OK
        || ngx_http_idv_limit_header(r, "RateLimit-Remaining", remaining)
           != NGX_OK
        || ngx_http_idv_limit_header(r, "RateLimit-Reset", reset) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_limit_header(ngx_http_request_t *r, const char *name,
    ngx_uint_t n)
{
    ngx_str_t  value;

    value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    value.len = ngx_sprintf(value.data, "%ui", n) - value.data;

    return ngx_http_idv_set_header(r, name, &value, 1);
}


static void
ngx_http_idv_limit_log(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t level, const char *what, ngx_http_idv_limit_hit_t *hit)
{
    ngx_str_t   *product;
    const char  *key;

    product = ngx_http_idv_limit_product(ctx);

    switch (hit->rule->key) {

    case NGX_HTTP_IDV_LIMIT_ACCOUNT:
        key = "account";
        break;

    case NGX_HTTP_IDV_LIMIT_PRODUCT:
        key = "product";
        break;

    default: /* NGX_HTTP_IDV_LIMIT_TENANT */
        key = "tenant";
        break;
    }

    ngx_log_error(level, r->connection->log, 0,
                  "idv_limit: %s, excess: %ui.%03ui by zone \"%V\", "
                  "key=%s, tenant \"%V\", product \"%V\"",
                  what, hit->excess / 1000, hit->excess % 1000,
                  &hit->rule->shm_zone->shm.name, key, &ctx->tenant,
                  product);
}


static void
ngx_http_idv_limit_delay_handler(ngx_event_t *ev)
{
    ngx_http_idv_resume(ev->data);
}


static void
ngx_http_idv_limit_delay_cleanup(void *data)
{
    ngx_http_idv_limit_ctx_t  *lctx = data;

    if (lctx->delay.timer_set) {
        ngx_del_timer(&lctx->delay);
    }
}


/*
 * The upstream said Throttling: the account's quota is spent whatever
 * the gateway counted (other gateways, the console, a lowered quota).
 * Every key=product and key=account bucket the request went through is
 * filled so that it admits nothing for one second (or for one request's
 * worth of its rate, if that is longer), then resumes at its rate.
 */

static ngx_int_t
ngx_http_idv_limit_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                       level;
    ngx_uint_t                      i, full;
    ngx_msec_t                      now;
    ngx_msec_int_t                  ms;
    ngx_http_idv_limit_hit_t       *hit;
    ngx_http_idv_limit_ctx_t       *lctx;
    ngx_http_idv_limit_node_t      *lr;
    ngx_http_idv_limit_loc_conf_t  *lcf;

    lctx = ngx_http_get_module_ctx(r, ngx_http_idv_limit_module);

    if (lctx == NULL || lctx->nhits == 0 || !ctx->answer.upstream
        || ctx->code.len < 10
        || ngx_strlcasestrn(ctx->code.data, ctx->code.data + ctx->code.len,
                            (u_char *) "Throttling", 10 - 1)
           == NULL)
    {
        return NGX_DECLINED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_limit_module);

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        if (hit->rule->key == NGX_HTTP_IDV_LIMIT_TENANT) {
            continue;
        }

        /* burst, plus a second of the rate less the request it admits */

        full = hit->rule->burst + ngx_max(hit->rate / 60, 1000) - 1000;

        ngx_shmtx_lock(&hit->zone->shpool->mutex);

        now = ngx_current_msec;

        lr = ngx_http_idv_limit_lookup(hit->zone, &hit->key, hit->hash);

        if (lr) {
            level = ngx_http_idv_limit_level(lr, hit->rate, now, &ms);

            if (level < (ngx_int_t) full) {
                lr->excess = full;
                lr->last = now;
                lr->rate = (uint32_t) hit->rate;
            }
        }

        ngx_shmtx_unlock(&hit->zone->shpool->mutex);

        if (lr) {
            hit->excess = full;

            ngx_http_idv_limit_log(r, ctx, lcf->log_level,
                                   "upstream throttling, backing off", hit);
        }
    }

    return NGX_DECLINED;
}


/*
 * What the bucket holds now, in milli-requests: its excess less what
 * leaked at this rate since its last update (negative once it has been
 * idle for longer than it needed to drain).
 */

static ngx_int_t
ngx_http_idv_limit_level(ngx_http_idv_limit_node_t *lr, ngx_uint_t rate,
    ngx_msec_t now, ngx_msec_int_t *msp)
{
    ngx_msec_int_t  ms;

    ms = (ngx_msec_int_t) (now - lr->last);

    if (ms < -60000) {
        /* the clock went far back: count it as a fresh millisecond */
        ms = 1;

    } else if (ms < 0) {
        ms = 0;
    }

    *msp = ms;

    /* an hour drains any bucket: keeps rate * ms far from overflowing */

    if (ms > 3600000) {
        ms = 3600000;
    }

    return (ngx_int_t) lr->excess - (ngx_int_t) (rate * ms / 60000);
}


static ngx_http_idv_limit_node_t *
ngx_http_idv_limit_lookup(ngx_http_idv_limit_zone_t *zone, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                   rc;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_idv_limit_node_t  *lr;

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        lr = (ngx_http_idv_limit_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, lr->data, key->len, (size_t) lr->len);

        if (rc == 0) {
            return lr;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * A new bucket.  Up to two drained buckets at the LRU tail are reclaimed
 * first; if the zone is still full, the least recently used buckets are
 * evicted, except those this request holds.
 */

static ngx_http_idv_limit_node_t *
ngx_http_idv_limit_create(ngx_http_idv_limit_ctx_t *lctx,
    ngx_http_idv_limit_hit_t *hit, ngx_msec_t now)
{
    size_t                       size;
    ngx_int_t                    level;
    ngx_uint_t                   n, evicted;
    ngx_msec_int_t               ms;
    ngx_rbtree_node_t           *node;
    ngx_http_idv_limit_zone_t   *zone;
    ngx_http_idv_limit_node_t   *lr;
    ngx_http_idv_limit_shctx_t  *sh;

    zone = hit->zone;
    sh = zone->sh;

    for (n = 0; n < 2; n++) {
        lr = ngx_http_idv_limit_oldest(lctx, zone);

        if (lr == NULL) {
            break;
        }

        /* drained: a request would find it as good as new */

        level = ngx_http_idv_limit_level(lr, lr->rate, now, &ms);

        if (level + 1000 > 0) {
            break;
        }

        ngx_http_idv_limit_free(zone, lr);
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_idv_limit_node_t, data)
           + hit->key.len;

    node = ngx_slab_alloc_locked(zone->shpool, size);

    evicted = 0;

    while (node == NULL && evicted < NGX_HTTP_IDV_LIMIT_EVICT) {
        lr = ngx_http_idv_limit_oldest(lctx, zone);

        if (lr == NULL) {
            break;
        }

        ngx_http_idv_limit_free(zone, lr);
        evicted++;

        node = ngx_slab_alloc_locked(zone->shpool, size);
    }

    if (evicted && ngx_time() - sh->evict_logged
                   >= NGX_HTTP_IDV_LIMIT_LOG_EVERY)
    {
        sh->evict_logged = ngx_time();
        hit->evicted = 1;
    }

    if (node == NULL) {
        if (ngx_time() - sh->nomem_logged >= NGX_HTTP_IDV_LIMIT_LOG_EVERY) {
            sh->nomem_logged = ngx_time();
            hit->nomem = 1;
        }

        return NULL;
    }

    node->key = hit->hash;

    lr = (ngx_http_idv_limit_node_t *) &node->color;

    lr->len = (u_short) hit->key.len;
    lr->excess = 0;
    lr->last = now;
    lr->rate = (uint32_t) hit->rate;

    ngx_memcpy(lr->data, hit->key.data, hit->key.len);

    ngx_rbtree_insert(&sh->rbtree, node);
    ngx_queue_insert_head(&sh->queue, &lr->queue);

    return lr;
}


/* the least recently used bucket of the zone that the request does not
   hold itself */

static ngx_http_idv_limit_node_t *
ngx_http_idv_limit_oldest(ngx_http_idv_limit_ctx_t *lctx,
    ngx_http_idv_limit_zone_t *zone)
{
    ngx_uint_t                  i;
    ngx_queue_t                *q;
    ngx_http_idv_limit_node_t  *lr;

    for (q = ngx_queue_last(&zone->sh->queue);
         q != ngx_queue_sentinel(&zone->sh->queue);
         q = ngx_queue_prev(q))
    {
        lr = ngx_queue_data(q, ngx_http_idv_limit_node_t, queue);

        for (i = 0; i < lctx->nhits; i++) {
            if (lctx->hits[i].node == lr) {
                break;
            }
        }

        if (i == lctx->nhits) {
            return lr;
        }
    }

    return NULL;
}


static void
ngx_http_idv_limit_free(ngx_http_idv_limit_zone_t *zone,
    ngx_http_idv_limit_node_t *lr)
{
    ngx_rbtree_node_t  *node;

    ngx_queue_remove(&lr->queue);

    node = (ngx_rbtree_node_t *)
               ((u_char *) lr - offsetof(ngx_rbtree_node_t, color));

    ngx_rbtree_delete(&zone->sh->rbtree, node);

    ngx_slab_free_locked(zone->shpool, node);
}


/* equal hashes are ordered by key, the way the lookup walks them */

static void
ngx_http_idv_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_idv_limit_node_t   *lr, *lrt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            lr = (ngx_http_idv_limit_node_t *) &node->color;
            lrt = (ngx_http_idv_limit_node_t *) &temp->color;

            p = (ngx_memn2cmp(lr->data, lrt->data, lr->len, lrt->len) < 0)
                ? &temp->left : &temp->right;
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


/*
 * A zone of the same name and size is reused on reload with its buckets.
 * nginx would silently start a new, empty zone for a new size: the
 * counters would be lost behind the operator's back, so that is refused.
 */

static ngx_int_t
ngx_http_idv_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_limit_zone_t *ozone = data;

    size_t                      len;
    ngx_uint_t                  i;
    ngx_cycle_t                *old;
    ngx_shm_zone_t             *oshm;
    ngx_list_part_t            *part;
    ngx_http_idv_limit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;

        return NGX_OK;
    }

    old = zone->cycle->old_cycle;

    if (old && old->shared_memory.part.elts) {
        part = &old->shared_memory.part;
        oshm = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                oshm = part->elts;
                i = 0;
            }

            if (oshm[i].tag != shm_zone->tag
                || oshm[i].shm.name.len != shm_zone->shm.name.len
                || ngx_strncmp(oshm[i].shm.name.data, shm_zone->shm.name.data,
                               shm_zone->shm.name.len)
                   != 0)
            {
                continue;
            }

            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "idv_limit_zone \"%V\" cannot change its size "
                          "from %uz to %uz bytes on reload: keep the old "
                          "size, or restart nginx to resize it (its "
                          "counters then start afresh)",
                          &shm_zone->shm.name, oshm[i].shm.size,
                          shm_zone->shm.size);

            return NGX_ERROR;
        }
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;

        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_idv_limit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_idv_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    zone->sh->evict_logged = 0;
    zone->sh->nomem_logged = 0;
    zone->sh->invalid_logged = 0;

    len = sizeof(" in idv_limit_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in idv_limit_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is expected and handled: the slab allocator is quiet */
    zone->shpool->log_nomem = 0;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, shm_zone->shm.log, 0,
                   "idv_limit_zone \"%V\": %uz bytes, a bucket takes %uz "
                   "bytes plus its key",
                   &shm_zone->shm.name, shm_zone->shm.size,
                   offsetof(ngx_rbtree_node_t, color)
                   + offsetof(ngx_http_idv_limit_node_t, data));

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_limit_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_idv_limit_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_idv_limit_ctx_t  *lctx;

    lctx = ngx_http_get_module_ctx(r->main, ngx_http_idv_limit_module);

    if (lctx == NULL || lctx->status == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->len = ngx_http_idv_limit_status[lctx->status - 1].len;
    v->data = ngx_http_idv_limit_status[lctx->status - 1].data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_limit_init(ngx_conf_t *cf)
{
    if (ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_CHARGE,
                                 ngx_http_idv_limit_handler)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_ANSWER,
                                    ngx_http_idv_limit_answer);
}


static void *
ngx_http_idv_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idv_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->rules.elts = NULL;
     *     conf->rules.nelts = 0;
     */

    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET;
    conf->dry_run = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_idv_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_limit_loc_conf_t *prev = parent;
    ngx_http_idv_limit_loc_conf_t *conf = child;

    ngx_uint_t                  i;
    ngx_http_idv_limit_rule_t  *rules;

    /* a level with its own rules does not inherit any, as in limit_req */

    if (conf->rules.elts == NULL) {
        conf->rules = prev->rules;
    }

    rules = conf->rules.elts;

    for (i = 0; i < conf->rules.nelts; i++) {
        if (rules[i].shm_zone->data == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"idv_limit\" uses the zone \"%V\", which "
                               "is not declared: add "
                               "\"idv_limit_zone zone=%V:1m;\" to the "
                               "http block",
                               &rules[i].shm_zone->shm.name,
                               &rules[i].shm_zone->shm.name);
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_value(conf->headers, prev->headers, 0);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);

    return NGX_CONF_OK;
}


/* idv_limit_zone zone=NAME:SIZE; */

static char *
ngx_http_idv_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                     *p;
    ssize_t                     size;
    ngx_str_t                  *value, name, s;
    ngx_shm_zone_t             *shm_zone;
    ngx_http_idv_limit_zone_t  *zone;

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "zone=", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"idv_limit_zone\", "
                           "expected \"zone=NAME:SIZE\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 5;

    p = (u_char *) ngx_strchr(name.data, ':');

    if (p == NULL || p == name.data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\" in \"idv_limit_zone\", "
                           "expected \"zone=NAME:SIZE\" such as "
                           "\"zone=tenants:1m\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.len = p - name.data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\" in \"idv_limit_zone\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" of \"idv_limit_zone\" is too small, "
                           "the minimum is %uzk",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_limit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->cycle = cf->cycle;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_idv_limit_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv_limit_zone \"%V\" is declared twice", &name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_idv_limit_init_zone;
    shm_zone->data = zone;

    return NGX_CONF_OK;
}


/*
 * idv_limit zone=NAME rate=RATE [burst=N] [nodelay]
 *           [key=tenant|product|account];
 */

static char *
ngx_http_idv_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_limit_loc_conf_t *lcf = conf;

    u_char                            *p;
    ngx_int_t                          burst;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, key, rate, nodelay;
    ngx_shm_zone_t                    *shm_zone;
    ngx_http_complex_value_t          *cv;
    ngx_http_idv_limit_rule_t         *rule, *rules;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    shm_zone = NULL;
    rate = 0;
    cv = NULL;
    burst = 0;
    nodelay = 0;
    key = NGX_HTTP_IDV_LIMIT_TENANT;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {

            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            if (s.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"idv_limit\" needs a zone name in "
                                   "\"zone=\"");
                return NGX_CONF_ERROR;
            }

            shm_zone = ngx_shared_memory_add(cf, &s, 0,
                                             &ngx_http_idv_limit_module);
            if (shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {

            s.len = value[i].len - 5;
            s.data = value[i].data + 5;

            p = ngx_strlchr(s.data, s.data + s.len, '$');

            if (p) {
                cv = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
                if (cv == NULL) {
                    return NGX_CONF_ERROR;
                }

                ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

                ccv.cf = cf;
                ccv.value = &s;
                ccv.complex_value = cv;

                if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                    return NGX_CONF_ERROR;
                }

                rate = 0;
                continue;
            }

            rate = ngx_http_idv_limit_parse_rate(s.data, s.len);

            if (rate == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\" in \"idv_limit\": "
                                   "use \"Nr/s\" or \"Nr/m\", at most "
                                   "%dr/s, or a variable", &value[i],
                                   NGX_HTTP_IDV_LIMIT_MAX_RATE);
                return NGX_CONF_ERROR;
            }

            cv = NULL;
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {

            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (burst < 0 || burst > NGX_HTTP_IDV_LIMIT_MAX_BURST) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid burst \"%V\" in \"idv_limit\": "
                                   "use a number of requests from 0 to %d",
                                   &value[i], NGX_HTTP_IDV_LIMIT_MAX_BURST);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "nodelay") == 0) {
            nodelay = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {

            if (ngx_strcmp(value[i].data + 4, "tenant") == 0) {
                key = NGX_HTTP_IDV_LIMIT_TENANT;

            } else if (ngx_strcmp(value[i].data + 4, "product") == 0) {
                key = NGX_HTTP_IDV_LIMIT_PRODUCT;

            } else if (ngx_strcmp(value[i].data + 4, "account") == 0) {
                key = NGX_HTTP_IDV_LIMIT_ACCOUNT;

            } else {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid key \"%V\" in \"idv_limit\": "
                                   "use \"key=tenant\", \"key=product\" or "
                                   "\"key=account\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"idv_limit\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_limit\" needs \"zone=NAME\", a zone "
                           "declared with \"idv_limit_zone\"");
        return NGX_CONF_ERROR;
    }

    if (rate == 0 && cv == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_limit\" needs \"rate=\", such as "
                           "\"rate=10r/s\" or \"rate=$tenant_rate\"");
        return NGX_CONF_ERROR;
    }

    rules = lcf->rules.elts;

    if (rules == NULL) {
        if (ngx_array_init(&lcf->rules, cf->pool, 2,
                           sizeof(ngx_http_idv_limit_rule_t))
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; i < lcf->rules.nelts; i++) {
        if (rules[i].shm_zone == shm_zone && rules[i].key == key) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"idv_limit\" with zone \"%V\" and the same "
                               "key is duplicate: use another zone or key",
                               &shm_zone->shm.name);
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->rules.nelts == NGX_HTTP_IDV_LIMIT_MAX_RULES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"idv_limit\" rules, at most %d on one "
                           "level", NGX_HTTP_IDV_LIMIT_MAX_RULES);
        return NGX_CONF_ERROR;
    }

    rule = ngx_array_push(&lcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    rule->shm_zone = shm_zone;
    rule->key = key;
    rule->rate = rate;
    rule->rate_value = cv;
    rule->burst = burst * 1000;
    rule->nodelay = nodelay;

    return NGX_CONF_OK;
}
