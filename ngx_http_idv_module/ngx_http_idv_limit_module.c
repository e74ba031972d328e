
/*
 * ngx_http_idv_limit_module: per-tenant QPS limits and an account-wide
 * ceiling per product, in the keyed store.
 *
 * Each idv_limit rule keeps a leaky bucket per key in a store zone
 * (idv_limit_zone), counted in milli-requests the way limit_req counts
 * them: a request adds 1000, the bucket leaks "rate" per second, a
 * request that would take it over "burst" is refused.  The key is the
 * tenant and the product (key=tenant), the product alone (key=product:
 * the account's per-product quota, shared by all tenants), or nothing
 * (key=account).
 *
 * A request's buckets are one atomic batch of the store: every rule is
 * checked, then all are charged or none, as one step for all workers, so
 * that a request refused by one rule costs nothing in the others.  The
 * store keeps a bucket until it has drained and never evicts it: a zone
 * with no room for a new bucket refuses the request (503
 * Gateway.StateFull) rather than let it through unlimited.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_store.h"


#define NGX_HTTP_IDV_LIMIT_PASSED            1
#define NGX_HTTP_IDV_LIMIT_DELAYED           2
#define NGX_HTTP_IDV_LIMIT_REJECTED          3
#define NGX_HTTP_IDV_LIMIT_DELAYED_DRY_RUN   4
#define NGX_HTTP_IDV_LIMIT_REJECTED_DRY_RUN  5

/* the first byte of a bucket's key */
#define NGX_HTTP_IDV_LIMIT_TENANT            't'
#define NGX_HTTP_IDV_LIMIT_PRODUCT           'p'
#define NGX_HTTP_IDV_LIMIT_ACCOUNT           'a'

/* a zone's count of requests with an invalid variable rate this minute */
#define NGX_HTTP_IDV_LIMIT_INVALID           "!invalid rate"
#define NGX_HTTP_IDV_LIMIT_LOG_EVERY         60000

/*
 * What a request costs.  The store's level counts the request it admits,
 * limit_req's excess (of which rules, logs and headers speak) does not:
 * the level is the excess + 1000, and a rule's burst is passed as
 * burst + 1000.
 */
#define NGX_HTTP_IDV_LIMIT_COST              1000

/* one batch plans up to 8 operations on the stack */
#define NGX_HTTP_IDV_LIMIT_MAX_RULES         8

/* rates are kept in milli-requests per minute (exact for r/m too) */
#define NGX_HTTP_IDV_LIMIT_MAX_RATE          50000       /* r/s */
#define NGX_HTTP_IDV_LIMIT_MAX_BURST         1000000

/* the steps of a request */
#define NGX_HTTP_IDV_LIMIT_CHARGE            1
#define NGX_HTTP_IDV_LIMIT_CHARGED           2
#define NGX_HTTP_IDV_LIMIT_FILL              3
#define NGX_HTTP_IDV_LIMIT_DONE              4


/* what a rule's buckets count: its key's kind, name, and 429 message */
typedef struct {
    u_char                       kind;      /* NGX_HTTP_IDV_LIMIT_TENANT...*/
    ngx_str_t                    name;
    const char                  *message;
} ngx_http_idv_limit_key_t;


typedef struct {
    ngx_str_t                    zone;      /* its name, until merged */
    ngx_http_idv_store_t        *store;
    ngx_http_idv_limit_key_t    *key;
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
    ngx_str_t                    key;
    ngx_str_t                    invalid;   /* the variable's bad rate */
    ngx_uint_t                   rate;
    ngx_uint_t                   excess;    /* with this request */
    unsigned                     reject:1;
} ngx_http_idv_limit_hit_t;


/* the request's, ngx_http_get_module_ctx() */
typedef struct {
    ngx_uint_t                   status;    /* NGX_HTTP_IDV_LIMIT_* */
    ngx_uint_t                   step;

    /*
     * the rules that apply (nhits), then those with an invalid rate
     * (ninvalid); ops[i] is the store operation of hits[i]
     */
    ngx_http_idv_limit_hit_t    *hits;
    ngx_uint_t                   nhits;
    ngx_uint_t                   ninvalid;
    ngx_http_idv_store_op_t     *ops;

    ngx_http_idv_store_batch_t   batch;

    ngx_event_t                  delay;
} ngx_http_idv_limit_ctx_t;


static ngx_int_t ngx_http_idv_limit_handler(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_limit_prepare(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_rule_t *rule,
    ngx_http_idv_limit_hit_t *hit);
static ngx_uint_t ngx_http_idv_limit_parse_rate(u_char *p, size_t len);
static ngx_str_t *ngx_http_idv_limit_product(ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_limit_bucket(ngx_http_idv_store_op_t *op,
    ngx_http_idv_limit_hit_t *hit, ngx_uint_t cost, ngx_uint_t fill);
static ngx_int_t ngx_http_idv_limit_run(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_ctx_t *lctx, ngx_uint_t nops,
    ngx_uint_t step);
static ngx_int_t ngx_http_idv_limit_found(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_ctx_t *lctx);
static ngx_int_t ngx_http_idv_limit_decide(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_ctx_t *lctx);
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
static ngx_int_t ngx_http_idv_limit_backed_off(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_limit_ctx_t *lctx);

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
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
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


static ngx_str_t  ngx_http_idv_limit_status_name =
    ngx_string("idv_limit_status");


static ngx_http_idv_limit_key_t  ngx_http_idv_limit_keys[] = {

    { NGX_HTTP_IDV_LIMIT_TENANT, ngx_string("tenant"),
      "Too many requests for this tenant; retry after the seconds in "
      "Retry-After" },

    { NGX_HTTP_IDV_LIMIT_PRODUCT, ngx_string("product"),
      "Too many requests for this product across all tenants; retry after "
      "the seconds in Retry-After" },

    { NGX_HTTP_IDV_LIMIT_ACCOUNT, ngx_string("account"),
      "Too many requests for the account; retry after the seconds in "
      "Retry-After" },

    { 0, ngx_null_string, NULL }
};


static ngx_str_t  ngx_http_idv_limit_status[] = {
    ngx_string("PASSED"),
    ngx_string("DELAYED"),
    ngx_string("REJECTED"),
    ngx_string("DELAYED_DRY_RUN"),
    ngx_string("REJECTED_DRY_RUN")
};


/*
 * CHARGE: one atomic batch checks and charges every bucket of the
 * request; NGX_OK to go on, NGX_AGAIN while the batch runs or the
 * request is delayed, or an answer (429, 503)
 */

static ngx_int_t
ngx_http_idv_limit_handler(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i, n;
    ngx_http_idv_limit_hit_t       *hit;
    ngx_http_idv_limit_ctx_t       *lctx;
    ngx_http_idv_limit_rule_t      *rules;
    ngx_http_idv_limit_loc_conf_t  *lcf;

    lctx = ngx_http_get_module_ctx(r, ngx_http_idv_limit_module);

    if (lctx) {
        if (lctx->batch.pending) {
            return NGX_AGAIN;
        }

        if (lctx->step == NGX_HTTP_IDV_LIMIT_CHARGE) {
            return ngx_http_idv_limit_found(r, ctx, lctx);
        }

        /* woken up when the delay is over */
        return lctx->delay.timer_set ? NGX_AGAIN : NGX_OK;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_limit_module);

    n = lcf->rules.nelts;

    if (n == 0) {
        return NGX_DECLINED;
    }

    lctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_limit_ctx_t)
                                + n * sizeof(ngx_http_idv_limit_hit_t)
                                + n * sizeof(ngx_http_idv_store_op_t));
    if (lctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lctx->hits = (ngx_http_idv_limit_hit_t *) &lctx[1];
    lctx->ops = (ngx_http_idv_store_op_t *) &lctx->hits[n];
    lctx->step = NGX_HTTP_IDV_LIMIT_CHARGED;

    ngx_http_set_ctx(r, lctx, ngx_http_idv_limit_module);

    /* the rules that apply from the front, those with a bad rate from
       the back, then moved to follow them */

    rules = lcf->rules.elts;

    for (i = 0; i < n; i++) {
        hit = &lctx->hits[lctx->nhits];

        rc = ngx_http_idv_limit_prepare(r, ctx, &rules[i], hit);

        if (rc == NGX_OK) {
            lctx->nhits++;

        } else if (rc == NGX_ABORT) {
            lctx->hits[n - 1 - lctx->ninvalid++] = *hit;

        } else if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (lctx->nhits + lctx->ninvalid == 0) {
        return NGX_DECLINED;
    }

    ngx_memmove(&lctx->hits[lctx->nhits], &lctx->hits[n - lctx->ninvalid],
                lctx->ninvalid * sizeof(ngx_http_idv_limit_hit_t));

    for (i = 0; i < lctx->nhits; i++) {
        ngx_http_idv_limit_bucket(&lctx->ops[i], &lctx->hits[i],
                                  NGX_HTTP_IDV_LIMIT_COST, 0);
    }

    /* a zone's invalid rates are counted, so that one line a minute
       tells of them whichever worker sees them */

    for ( /* void */ ; i < lctx->nhits + lctx->ninvalid; i++) {
        hit = &lctx->hits[i];

        lctx->ops[i].store = hit->rule->store;
        lctx->ops[i].op = NGX_HTTP_IDV_STORE_INCR;
        lctx->ops[i].key = hit->key;
        lctx->ops[i].delta = 1;
        lctx->ops[i].ttl = NGX_HTTP_IDV_LIMIT_LOG_EVERY;
    }

    return ngx_http_idv_limit_run(r, ctx, lctx, i, NGX_HTTP_IDV_LIMIT_CHARGE);
}


/*
 * The rate and key of one rule for this request.  NGX_DECLINED: the rule
 * does not apply (an empty variable rate exempts); NGX_ABORT: an invalid
 * variable rate, which exempts too, so that a typo in a map does not lock
 * a tenant out, and is logged.
 */

static ngx_int_t
ngx_http_idv_limit_prepare(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_rule_t *rule, ngx_http_idv_limit_hit_t *hit)
{
    u_char     *p, kind;
    size_t      len;
    ngx_str_t   value, *name;

    hit->rule = rule;
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
            hit->invalid = value;
            ngx_str_set(&hit->key, NGX_HTTP_IDV_LIMIT_INVALID);
            return NGX_ABORT;
        }
    }

    /*
     * key: kind, then for tenant and product buckets the product code
     * (or, for actions without one such as CheckResult, the action's
     * name) with its length in front (two bytes, plenty for a product
     * code or an action's name), then the tenant
     */

    kind = rule->key->kind;
    name = ngx_http_idv_limit_product(ctx);

    len = 1;

    if (kind != NGX_HTTP_IDV_LIMIT_ACCOUNT) {
        len += 3 + name->len;
    }

    if (kind == NGX_HTTP_IDV_LIMIT_TENANT) {
        len += ctx->tenant.len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    hit->key.data = p;
    hit->key.len = len;

    *p++ = kind;

    if (kind != NGX_HTTP_IDV_LIMIT_ACCOUNT) {
        *p++ = (u_char) (ctx->req.product.len ? 'P' : 'A');
        *p++ = (u_char) (name->len >> 8);
        *p++ = (u_char) (name->len & 0xff);
        p = ngx_http_idv_cpymem(p, name->data, name->len);
    }

    if (kind == NGX_HTTP_IDV_LIMIT_TENANT) {
        (void) ngx_http_idv_cpymem(p, ctx->tenant.data, ctx->tenant.len);
    }

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


static void
ngx_http_idv_limit_bucket(ngx_http_idv_store_op_t *op,
    ngx_http_idv_limit_hit_t *hit, ngx_uint_t cost, ngx_uint_t fill)
{
    ngx_memzero(op, sizeof(ngx_http_idv_store_op_t));

    op->store = hit->rule->store;
    op->op = NGX_HTTP_IDV_STORE_BUCKET;
    op->key = hit->key;
    op->rate = hit->rate;
    op->burst = hit->rule->burst + NGX_HTTP_IDV_LIMIT_COST;
    op->cost = cost;
    op->keep = 1;
    op->fill = fill ? 1 : 0;
}


/*
 * The charge (atomic: all buckets or none) or the back-off; what it found
 * is acted on now, or once the batch completes and the pipeline runs the
 * handler again.
 */

static ngx_int_t
ngx_http_idv_limit_run(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_ctx_t *lctx, ngx_uint_t nops, ngx_uint_t step)
{
    lctx->batch.ops = lctx->ops;
    lctx->batch.nops = nops;
    lctx->batch.atomic = (step == NGX_HTTP_IDV_LIMIT_CHARGE);
    lctx->step = step;

    if (ngx_http_idv_state_call(r, &lctx->batch) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_limit_found(r, ctx, lctx);
}


static ngx_int_t
ngx_http_idv_limit_found(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_ctx_t *lctx)
{
    if (lctx->step == NGX_HTTP_IDV_LIMIT_CHARGE) {
        lctx->step = NGX_HTTP_IDV_LIMIT_CHARGED;
        return ngx_http_idv_limit_decide(r, ctx, lctx);
    }

    lctx->step = NGX_HTTP_IDV_LIMIT_DONE;

    return ngx_http_idv_limit_backed_off(r, ctx, lctx);
}


/* what the batch found: the request passes, is delayed or refused */

static ngx_int_t
ngx_http_idv_limit_decide(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_ctx_t *lctx)
{
    ngx_uint_t                      i, level, least, reject;
    ngx_msec_t                      delay, d, wait, w;
    ngx_pool_cleanup_t             *cln;
    ngx_http_idv_store_op_t        *op;
    ngx_http_idv_limit_hit_t       *hit, *shown, *delaying;
    ngx_http_idv_limit_loc_conf_t  *lcf;

    if (lctx->batch.rc != NGX_OK) {

        if (lctx->nhits == 0) {
            /* only the count of invalid rates was lost */
            return NGX_DECLINED;
        }

        /* no bucket was charged: refused rather than unlimited */
        return ngx_http_idv_state_error(r, ctx, lctx->hits[0].rule->store,
                                        lctx->batch.rc);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_limit_module);

    reject = 0;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];
        op = &lctx->ops[i];

        hit->excess = (op->number > NGX_HTTP_IDV_LIMIT_COST)
                      ? (ngx_uint_t) op->number - NGX_HTTP_IDV_LIMIT_COST
                      : 0;

        if (op->rc != NGX_OK) {
            hit->reject = 1;
            reject = 1;
        }
    }

    /* the request that started a zone's count of invalid rates tells */

    for ( /* void */ ; i < lctx->nhits + lctx->ninvalid; i++) {
        hit = &lctx->hits[i];

        if (reject || lctx->ops[i].number != 1) {
            continue;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idv_limit: invalid rate \"%V\" from \"%V\" for zone "
                      "\"%V\", the rule is not applied (logged once a "
                      "minute)", &hit->invalid, &hit->rule->rate_value->value,
                      &hit->rule->zone);
    }

    if (lctx->nhits == 0) {
        return NGX_DECLINED;
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

        return ngx_http_idv_error(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                  "Gateway.Throttled",
                                  shown->rule->key->message);
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
    ngx_log_error(level, r->connection->log, 0,
                  "idv_limit: %s, excess: %ui.%03ui by zone \"%V\", "
                  "key=%V, tenant \"%V\", product \"%V\"",
                  what, hit->excess / 1000, hit->excess % 1000,
                  &hit->rule->zone, &hit->rule->key->name, &ctx->tenant,
                  ngx_http_idv_limit_product(ctx));
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
 * ANSWER: when the upstream said Throttling, the account's quota is spent
 * whatever the gateway counted (other gateways, the console, a lowered
 * quota).  Every key=product and key=account bucket the request went
 * through is filled so that it admits nothing for one second (or for one
 * request's worth of its rate, if that is longer), then resumes at its
 * rate.
 */

static ngx_int_t
ngx_http_idv_limit_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_uint_t                 i, n;
    ngx_http_idv_limit_hit_t  *hit;
    ngx_http_idv_limit_ctx_t  *lctx;

    lctx = ngx_http_get_module_ctx(r, ngx_http_idv_limit_module);

    if (lctx == NULL) {
        return NGX_DECLINED;
    }

    if (lctx->batch.pending) {
        return NGX_AGAIN;
    }

    if (lctx->step == NGX_HTTP_IDV_LIMIT_FILL) {
        return ngx_http_idv_limit_found(r, ctx, lctx);
    }

    if (lctx->step != NGX_HTTP_IDV_LIMIT_CHARGED || !ctx->answer.upstream
        || ctx->code.len < 10
        || ngx_strlcasestrn(ctx->code.data, ctx->code.data + ctx->code.len,
                            (u_char *) "Throttling", 10 - 1)
           == NULL)
    {
        return NGX_DECLINED;
    }

    lctx->step = NGX_HTTP_IDV_LIMIT_DONE;

    n = 0;

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        if (hit->rule->key->kind == NGX_HTTP_IDV_LIMIT_TENANT) {
            continue;
        }

        /* burst, plus a second of the rate less the request it admits */

        hit->excess = hit->rule->burst + ngx_max(hit->rate / 60, 1000)
                      - 1000;

        ngx_http_idv_limit_bucket(&lctx->ops[n++], hit,
                                  hit->excess + NGX_HTTP_IDV_LIMIT_COST, 1);
    }

    if (n == 0) {
        return NGX_DECLINED;
    }

    return ngx_http_idv_limit_run(r, ctx, lctx, n, NGX_HTTP_IDV_LIMIT_FILL);
}


static ngx_int_t
ngx_http_idv_limit_backed_off(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_limit_ctx_t *lctx)
{
    ngx_uint_t                      i;
    ngx_http_idv_limit_hit_t       *hit;
    ngx_http_idv_limit_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_limit_module);

    for (i = 0; i < lctx->nhits; i++) {
        hit = &lctx->hits[i];

        if (hit->rule->key->kind == NGX_HTTP_IDV_LIMIT_TENANT) {
            continue;
        }

        if (lctx->batch.rc == NGX_OK) {
            ngx_http_idv_limit_log(r, ctx, lcf->log_level,
                                   "upstream throttling, backing off", hit);

        } else {
            /* the answer is the upstream's already: only the log says */
            ngx_http_idv_limit_log(r, ctx, NGX_LOG_ERR,
                                   "upstream throttling, the back-off is "
                                   "lost (the zone is full or unavailable)",
                                   hit);
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_idv_limit_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_idv_limit_status_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_idv_limit_status_variable;

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

    /* a name is resolved once the http block has declared every zone */

    rules = conf->rules.elts;

    for (i = 0; i < conf->rules.nelts; i++) {
        if (rules[i].store) {
            continue;
        }

        rules[i].store = ngx_http_idv_store_find(cf, &rules[i].zone,
                                                 &ngx_http_idv_limit_module);

        if (rules[i].store == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: \"idv_limit\" uses the zone \"%V\", "
                               "which is not declared: add "
                               "\"idv_limit_zone zone=%V:1m;\" to the "
                               "http block", ngx_http_idv_conf_where(cf),
                               &rules[i].zone, &rules[i].zone);
            return NGX_CONF_ERROR;
        }

        /* all rules are charged in one batch: in one store */

        if (rules[i].store->remote != rules[0].store->remote) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: the \"idv_limit\" zones \"%V\" and "
                               "\"%V\" are kept in different places (shared "
                               "memory, or another \"idv_redis\"): the "
                               "rules of a location are charged together, "
                               "so their zones need the same \"store=\"",
                               ngx_http_idv_conf_where(cf), &rules[0].zone,
                               &rules[i].zone);
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_value(conf->headers, prev->headers, 0);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);

    return NGX_CONF_OK;
}


/* idv_limit_zone zone=NAME:SIZE; the store keeps it across reloads */

static char *
ngx_http_idv_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    if (ngx_http_idv_store_zone(cf, "limit", &ngx_http_idv_limit_module,
                                NULL)
        == NULL)
    {
        return NGX_CONF_ERROR;
    }

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
    ngx_str_t                         *value, s, zone;
    ngx_uint_t                         i, rate, nodelay;
    ngx_http_complex_value_t          *cv;
    ngx_http_idv_limit_key_t          *key;
    ngx_http_idv_limit_rule_t         *rule, *rules;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    ngx_str_null(&zone);
    rate = 0;
    cv = NULL;
    burst = 0;
    nodelay = 0;
    key = &ngx_http_idv_limit_keys[0];

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

            /* resolved at merge time, when every zone is declared */
            zone = s;
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

            for (key = ngx_http_idv_limit_keys; key->kind; key++) {
                if (ngx_strcmp(value[i].data + 4, key->name.data) == 0) {
                    break;
                }
            }

            if (key->kind == 0) {
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

    if (zone.len == 0) {
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
        if (rules[i].zone.len == zone.len
            && ngx_strncmp(rules[i].zone.data, zone.data, zone.len) == 0
            && rules[i].key == key)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"idv_limit\" with zone \"%V\" and the same "
                               "key is duplicate: use another zone or key",
                               &zone);
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

    rule->zone = zone;
    rule->store = NULL;
    rule->key = key;
    rule->rate = rate;
    rule->rate_value = cv;
    rule->burst = burst * 1000;
    rule->nodelay = nodelay;

    return NGX_CONF_OK;
}
