
/*
 * ngx_http_idv_cache_module: idempotent Initialize and kept results.
 *
 * Every Initialize is billable and Alibaba does not check MerchantBizId
 * for uniqueness, so the gateway makes Initialize idempotent: the answer
 * of the first call is kept under (tenant, ProductCode, MerchantBizId) for
 * ttl, and concurrent duplicates share one upstream call (a single
 * flight).  Final CheckResult answers may be kept too (idv_cache_results),
 * so that polling does not spend the account's quota.
 *
 * Everything lives in the keyed store, one entry per key:
 *
 *   'i' key   FLIGHT  the first call is upstream      kept until it ends
 *             READY   its answer, given again         cached, ttl
 *             FAILED  its error, for its waiters      cached, a second
 *
 * Which tenant owns a transaction, and the CheckResult answers kept for
 * idv_cache_results, are ngx_http_idv_tenancy_module.c's.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_store.h"
#include "ngx_http_idv_tenancy.h"

#include "ngx_http_idv_siphash.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>


/* entry states, the first byte of an 'i' entry */
#define NGX_HTTP_IDV_CACHE_FLIGHT     'F'
#define NGX_HTTP_IDV_CACHE_READY      'R'
#define NGX_HTTP_IDV_CACHE_FAILED     'X'

/* what the cache does for a request */
#define NGX_HTTP_IDV_CACHE_NONE       0
#define NGX_HTTP_IDV_CACHE_INITIALIZE 1     /* idempotent */

/* a request's part in a flight */
#define NGX_HTTP_IDV_CACHE_LEADER     1
#define NGX_HTTP_IDV_CACHE_WAITER     2

/* a waiter looks again this often (waiters in the flight's worker are
   woken at once) */
#define NGX_HTTP_IDV_CACHE_POLL       25

/*
 * A flight whose worker is alive but that has not answered in this time
 * is given up (a crashed worker is noticed at once, by its pid).  It is
 * longer than any sane set of proxy timeouts: taking over a live flight
 * could bill twice.
 */
#define NGX_HTTP_IDV_CACHE_ABANDONED  120000

/* a failed flight's error stays for its waiters, not for new requests */
#define NGX_HTTP_IDV_CACHE_FAILED_KEEP  1000

#define NGX_HTTP_IDV_CACHE_TTL        (30 * 60 * 1000)

/* state, digest of the parameters, flight number, pid */
#define NGX_HTTP_IDV_CACHE_HEAD       (1 + 16 + 8 + 4)


typedef struct {
    ngx_http_idv_store_t           *store;
    ngx_msec_t                      ttl;
} ngx_http_idv_cache_zone_t;


typedef struct {
    ngx_http_idv_cache_zone_t      *zone;
    ngx_str_t                       name;       /* until merged */
    ngx_msec_t                      results;
    ngx_msec_t                      wait;
} ngx_http_idv_cache_conf_t;


typedef struct {
    ngx_http_idv_cache_zone_t      *zone;

    ngx_http_idv_store_batch_t      batch;
    ngx_http_idv_store_op_t         op;
    ngx_http_request_t             *request;

    ngx_event_t                     poll;
    ngx_queue_t                     waiting;    /* this worker's waiters */
    ngx_msec_t                      deadline;

    ngx_str_t                       key;
    u_char                          head[NGX_HTTP_IDV_CACHE_HEAD];
    uint64_t                        flight;     /* led or awaited */

    ngx_str_t                       status;     /* $idv_cache_status */

    unsigned                        kind:2;
    unsigned                        role:2;
    unsigned                        queued:1;
    unsigned                        ran:1;      /* a batch's results to see */
} ngx_http_idv_cache_ctx_t;


static ngx_int_t ngx_http_idv_cache_handler(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cache_create(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_conf_t *conf,
    ngx_http_idv_cache_ctx_t **cctxp);
static ngx_int_t ngx_http_idv_cache_head(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_initialize(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_found(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_uint_t ngx_http_idv_cache_abandoned(ngx_str_t *v, ngx_msec_t age);
static ngx_int_t ngx_http_idv_cache_lead(ngx_http_request_t *r,
    ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_wait(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static void ngx_http_idv_cache_unwait(ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_replay(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx, ngx_str_t *v,
    ngx_msec_t age);
static ngx_int_t ngx_http_idv_cache_replay_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_str_t *v);
static ngx_int_t ngx_http_idv_cache_age(ngx_http_request_t *r,
    ngx_msec_t age);

static ngx_int_t ngx_http_idv_cache_answer(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cache_land(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_fail(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_end_flight(ngx_http_request_t *r,
    ngx_http_idv_cache_ctx_t *cctx, ngx_str_t *value, ngx_msec_t ttl);
static void ngx_http_idv_cache_cleanup(void *data);

static ngx_int_t ngx_http_idv_cache_run(ngx_http_request_t *r,
    ngx_http_idv_cache_ctx_t *cctx);
static void ngx_http_idv_cache_poll_handler(ngx_event_t *ev);
static void ngx_http_idv_cache_wake(ngx_str_t *key);
static ngx_int_t ngx_http_idv_cache_digest(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, u_char *out);
static ngx_int_t ngx_http_idv_cache_string(u_char **p, u_char *last,
    ngx_str_t *s);

static ngx_int_t ngx_http_idv_cache_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_idv_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_idv_cache_init(ngx_conf_t *cf);
static void *ngx_http_idv_cache_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_idv_cache_create_conf(ngx_conf_t *cf);
static char *ngx_http_idv_cache_merge_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_cache_results(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_cache_init_process(ngx_cycle_t *cycle);
static void ngx_http_idv_cache_exit(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_idv_cache_commands[] = {

    { ngx_string("idv_cache_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_cache_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_cache_results"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_cache_results,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cache_conf_t, results),
      NULL },

    { ngx_string("idv_cache_wait"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cache_conf_t, wait),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_cache_module_ctx = {
    ngx_http_idv_cache_add_variables,      /* preconfiguration */
    ngx_http_idv_cache_init,               /* postconfiguration */

    ngx_http_idv_cache_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idv_cache_create_conf,        /* create location configuration */
    ngx_http_idv_cache_merge_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_idv_cache_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_cache_module_ctx,        /* module context */
    ngx_http_idv_cache_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_idv_cache_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_idv_cache_exit,               /* exit process */
    ngx_http_idv_cache_exit,               /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the zones declared by idv_cache_zone */
typedef struct {
    ngx_array_t                     zones;  /* ngx_http_idv_cache_zone_t * */
} ngx_http_idv_cache_main_conf_t;


static ngx_str_t  ngx_http_idv_cache_status_name =
    ngx_string("idv_cache_status");

static ngx_str_t  ngx_http_idv_cache_hit = ngx_string("HIT");
static ngx_str_t  ngx_http_idv_cache_miss = ngx_string("MISS");
static ngx_str_t  ngx_http_idv_cache_shared = ngx_string("SHARED");
static ngx_str_t  ngx_http_idv_cache_conflict = ngx_string("CONFLICT");
static ngx_str_t  ngx_http_idv_cache_busy = ngx_string("BUSY");
static ngx_str_t  ngx_http_idv_cache_bypass = ngx_string("BYPASS");

static ngx_str_t  ngx_http_idv_cache_success = ngx_string("Success");

/* not part of the request's identity: the key has it */
static const char  *ngx_http_idv_cache_unsigned[] = {
    "ProductCode",
    NULL
};

/* this worker's waiters, woken when a flight lands here */
static ngx_queue_t   ngx_http_idv_cache_waiters;

/* flights are numbered per worker; the pid makes them unique */
static uint64_t      ngx_http_idv_cache_flights;

/*
 * the key of the parameters' digest, derived from the location's
 * AccessKey secret (the last one used in this worker)
 */
static u_char       *ngx_http_idv_cache_dkey_of;
static size_t        ngx_http_idv_cache_dkey_len;
static u_char        ngx_http_idv_cache_dkey[NGX_HTTP_IDV_SIPHASH_KEY_LEN];


/* STATE: an answer the cache has, a flight to wait for, or a new one */

static ngx_int_t
ngx_http_idv_cache_handler(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_idv_cache_ctx_t   *cctx;
    ngx_http_idv_cache_conf_t  *conf;

    cctx = ngx_http_get_module_ctx(r, ngx_http_idv_cache_module);

    if (cctx == NULL) {
        conf = ngx_http_get_module_loc_conf(r, ngx_http_idv_cache_module);

        if (conf->results
            && (ctx->conf->op->flags & NGX_HTTP_IDV_OP_RESULT))
        {
            /*
             * a final answer is kept, and given again, with its owner
             * (for as long as a callback keeps it, if that is longer)
             */
            ctx->kept_result = 1;
            ctx->keep_result = ngx_max(ctx->keep_result, conf->results);
        }

        if (conf->zone == NULL) {
            return NGX_DECLINED;
        }

        rc = ngx_http_idv_cache_create(r, ctx, conf, &cctx);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (cctx->kind == NGX_HTTP_IDV_CACHE_INITIALIZE) {
        return ngx_http_idv_cache_initialize(r, ctx, cctx);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_idv_cache_create(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_conf_t *conf, ngx_http_idv_cache_ctx_t **cctxp)
{
    u_char                    *p;
    ngx_str_t                 *product;
    ngx_uint_t                 flags;
    ngx_pool_cleanup_t        *cln;
    ngx_http_idv_cache_ctx_t  *cctx;

    cctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_cache_ctx_t));
    if (cctx == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_idv_cache_cleanup;
    cln->data = cctx;

    ngx_http_set_ctx(r, cctx, ngx_http_idv_cache_module);

    *cctxp = cctx;

    cctx->zone = conf->zone;
    cctx->request = r;

    flags = ctx->conf->op->flags;

    /*
     * Initialize: a billable call that creates a transaction the client
     * completes later (its result comes back by callback)
     */

    if ((flags & NGX_HTTP_IDV_OP_CREATES_TX)
        && (flags & NGX_HTTP_IDV_OP_BILLABLE)
        && ngx_http_idv_op_param(ctx->conf->op, (u_char *) "CallbackToken",
                                 sizeof("CallbackToken") - 1))
    {
        if (ctx->merchant_biz_id.len == 0) {
            cctx->status = ngx_http_idv_cache_bypass;
            return NGX_OK;
        }

        cctx->kind = NGX_HTTP_IDV_CACHE_INITIALIZE;

        /* the key: tenant, product and MerchantBizId, each with its size */

        product = ngx_http_idv_ngx_str(&ctx->req.product);

        cctx->key.len = 1 + 3 * 4 + ctx->tenant.len + product->len
                        + ctx->merchant_biz_id.len;
        cctx->key.data = ngx_pnalloc(r->pool, cctx->key.len);
        if (cctx->key.data == NULL) {
            return NGX_ERROR;
        }

        p = cctx->key.data;
        *p++ = 'i';
        p = ngx_sprintf(p, "%04xd", (int) (ctx->tenant.len & 0xffff));
        p = ngx_http_idv_cpymem(p, ctx->tenant.data, ctx->tenant.len);
        p = ngx_sprintf(p, "%04xd", (int) (product->len & 0xffff));
        p = ngx_http_idv_cpymem(p, product->data, product->len);
        p = ngx_sprintf(p, "%04xd",
                        (int) (ctx->merchant_biz_id.len & 0xffff));
        (void) ngx_http_idv_cpymem(p, ctx->merchant_biz_id.data,
                                   ctx->merchant_biz_id.len);

        return ngx_http_idv_cache_head(r, ctx, cctx);
    }

    cctx->status = ngx_http_idv_cache_bypass;

    return NGX_OK;
}


/* what a flight of this request writes first: state, digest, id, pid */

static ngx_int_t
ngx_http_idv_cache_head(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    u_char    *p;
    uint32_t   pid;

    p = cctx->head;
    *p++ = NGX_HTTP_IDV_CACHE_FLIGHT;

    if (ngx_http_idv_cache_digest(r, ctx, p) != NGX_OK) {
        return NGX_ERROR;
    }

    p += 16;

    cctx->flight = ++ngx_http_idv_cache_flights;
    p = ngx_cpymem(p, &cctx->flight, sizeof(uint64_t));

    pid = (uint32_t) ngx_pid;
    ngx_memcpy(p, &pid, sizeof(uint32_t));

    return NGX_OK;
}


/*
 * Initialize: an answer within ttl is given again; a call in flight is
 * waited for; anything else makes this request the flight.
 */

static ngx_int_t
ngx_http_idv_cache_initialize(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    ngx_int_t  rc;

    if (cctx->batch.pending) {
        return NGX_AGAIN;
    }

    if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {
        return NGX_DECLINED;
    }

    if (!cctx->ran) {

        if (cctx->role == NGX_HTTP_IDV_CACHE_WAITER) {
            if (cctx->poll.timer_set || cctx->poll.posted) {
                return NGX_AGAIN;
            }

            /* a waiter looks again */
            cctx->op.op = NGX_HTTP_IDV_STORE_GET;

        } else {
            /* a flight of its own, unless there is one */
            cctx->op.op = NGX_HTTP_IDV_STORE_ADD;
            cctx->op.value.data = cctx->head;
            cctx->op.value.len = NGX_HTTP_IDV_CACHE_HEAD;
            cctx->op.ttl = NGX_HTTP_IDV_CACHE_ABANDONED;
            cctx->op.keep = 1;
        }

        cctx->op.store = cctx->zone->store;
        cctx->op.key = cctx->key;

        rc = ngx_http_idv_cache_run(r, cctx);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }
    }

    cctx->ran = 0;

    if (cctx->batch.rc != NGX_OK) {
        ngx_http_idv_cache_unwait(cctx);
        return ngx_http_idv_state_error(r, ctx, cctx->zone->store,
                                        cctx->batch.rc);
    }

    if (cctx->op.op == NGX_HTTP_IDV_STORE_ADD && cctx->op.rc == NGX_OK) {
        return ngx_http_idv_cache_lead(r, cctx);
    }

    if (cctx->op.op == NGX_HTTP_IDV_STORE_CAS) {
        if (cctx->op.rc == NGX_OK) {
            return ngx_http_idv_cache_lead(r, cctx);
        }

        /* someone else took it over first: look again */
    }

    return ngx_http_idv_cache_found(r, ctx, cctx);
}


/* the entry under the key, as the last operation saw it */

static ngx_int_t
ngx_http_idv_cache_found(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    u_char      *v;
    ngx_int_t    rc;
    ngx_str_t    cur;
    ngx_uint_t   conflict;

    cur = cctx->op.result;

    if (cur.len == 0) {

        /* gone (expired, never there): lead */

        cctx->op.op = NGX_HTTP_IDV_STORE_ADD;
        cctx->op.value.data = cctx->head;
        cctx->op.value.len = NGX_HTTP_IDV_CACHE_HEAD;
        cctx->op.ttl = NGX_HTTP_IDV_CACHE_ABANDONED;
        cctx->op.keep = 1;

        goto again;
    }

    v = cur.data;

    if (cur.len < NGX_HTTP_IDV_CACHE_HEAD) {
        /* released, or landed without an answer: take it over */
        goto take;
    }

    conflict = (ngx_memcmp(v + 1, cctx->head + 1, 16) != 0);

    switch (v[0]) {

    case NGX_HTTP_IDV_CACHE_READY:

        if (conflict) {
            goto conflict;
        }

        cctx->status = (cctx->role == NGX_HTTP_IDV_CACHE_WAITER)
                       ? ngx_http_idv_cache_shared : ngx_http_idv_cache_hit;
        ngx_http_idv_cache_unwait(cctx);

        return ngx_http_idv_cache_replay(r, ctx, cctx, &cur, cctx->op.age);

    case NGX_HTTP_IDV_CACHE_FAILED:

        if (cctx->role == NGX_HTTP_IDV_CACHE_WAITER
            && ngx_memcmp(v + 17, &cctx->flight, sizeof(uint64_t)) == 0)
        {
            /* the flight this request waited for failed: its error */

            cctx->status = ngx_http_idv_cache_shared;
            ngx_http_idv_cache_unwait(cctx);

            return ngx_http_idv_cache_replay_error(r, ctx, &cur);
        }

        /* a new request is a new attempt */
        break;

    default: /* NGX_HTTP_IDV_CACHE_FLIGHT */

        if (!ngx_http_idv_cache_abandoned(&cur, cctx->op.age)) {

            if (conflict) {
                goto conflict;
            }

            if (cctx->role != NGX_HTTP_IDV_CACHE_WAITER) {
                /* the flight to wait for, by its number */
                ngx_memcpy(&cctx->flight, v + 17, sizeof(uint64_t));
            }

            return ngx_http_idv_cache_wait(r, ctx, cctx);
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idv: the Initialize in flight for MerchantBizId "
                      "\"%V\" was abandoned; taking it over",
                      &ctx->merchant_biz_id);
        break;
    }

take:

    /* take the entry over, unless another request does so first */

    rc = ngx_http_idv_cache_head(r, ctx, cctx);
    if (rc != NGX_OK) {
        return rc;
    }

    cctx->op.op = NGX_HTTP_IDV_STORE_CAS;
    cctx->op.expect = cur;
    cctx->op.value.data = cctx->head;
    cctx->op.value.len = NGX_HTTP_IDV_CACHE_HEAD;
    cctx->op.ttl = NGX_HTTP_IDV_CACHE_ABANDONED;
    cctx->op.keep = 1;

again:

    cctx->role = 0;
    ngx_str_null(&cctx->op.result);

    if (cctx->queued) {
        ngx_queue_remove(&cctx->waiting);
        cctx->queued = 0;
    }

    rc = ngx_http_idv_cache_run(r, cctx);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_cache_initialize(r, ctx, cctx);

conflict:

    ngx_http_idv_cache_unwait(cctx);
    cctx->status = ngx_http_idv_cache_conflict;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "idv: MerchantBizId \"%V\" was given with other parameters "
                  "within the ttl of idv_cache zone \"%V\"",
                  &ctx->merchant_biz_id, &cctx->zone->store->name);

    return ngx_http_idv_error(r, ctx, NGX_HTTP_CONFLICT,
                              "Gateway.IdempotencyConflict",
                              "This MerchantBizId was used with other "
                              "parameters; use a new MerchantBizId for a new "
                              "verification");
}


/*
 * A flight is abandoned when its worker is gone (this node's pids), or
 * when it has been in the air for longer than any call may take.
 */

static ngx_uint_t
ngx_http_idv_cache_abandoned(ngx_str_t *v, ngx_msec_t age)
{
    uint32_t  pid;

    if (age >= NGX_HTTP_IDV_CACHE_ABANDONED) {
        return 1;
    }

    ngx_memcpy(&pid, v->data + 1 + 16 + 8, sizeof(uint32_t));

    return ((ngx_pid_t) pid != ngx_pid && kill((ngx_pid_t) pid, 0) == -1
            && ngx_errno == NGX_ESRCH);
}


static ngx_int_t
ngx_http_idv_cache_lead(ngx_http_request_t *r, ngx_http_idv_cache_ctx_t *cctx)
{
    ngx_http_idv_cache_unwait(cctx);

    ngx_memcpy(&cctx->flight, cctx->head + 17, sizeof(uint64_t));

    cctx->role = NGX_HTTP_IDV_CACHE_LEADER;
    cctx->status = ngx_http_idv_cache_miss;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: flight %uL", cctx->flight);

    return NGX_DECLINED;
}


/* an identical Initialize is in flight: wait for it, within limits */

static ngx_int_t
ngx_http_idv_cache_wait(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    ngx_str_t                   one = ngx_string("1");
    ngx_msec_t                  now, left;
    ngx_http_idv_cache_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_idv_cache_module);

    now = ngx_current_msec;

    if (cctx->role != NGX_HTTP_IDV_CACHE_WAITER) {
        cctx->role = NGX_HTTP_IDV_CACHE_WAITER;
        cctx->deadline = now + conf->wait;

        cctx->poll.handler = ngx_http_idv_cache_poll_handler;
        cctx->poll.data = r;
        cctx->poll.log = r->connection->log;
    }

    left = cctx->deadline - now;

    if ((ngx_msec_int_t) left <= 0) {

        ngx_http_idv_cache_unwait(cctx);
        cctx->status = ngx_http_idv_cache_busy;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idv: an identical Initialize for MerchantBizId "
                      "\"%V\" is still in flight after idv_cache_wait %Mms",
                      &ctx->merchant_biz_id, conf->wait);

        if (ngx_http_idv_set_header(r, "Retry-After", &one, 1) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_idv_error(r, ctx, NGX_HTTP_CONFLICT,
                                  "Gateway.IdempotencyInProgress",
                                  "An identical Initialize is still waiting "
                                  "for ID Verification; retry with the same "
                                  "MerchantBizId");
    }

    if (!cctx->queued) {
        ngx_queue_insert_tail(&ngx_http_idv_cache_waiters, &cctx->waiting);
        cctx->queued = 1;
    }

    ngx_add_timer(&cctx->poll, ngx_min(left, NGX_HTTP_IDV_CACHE_POLL));

    return NGX_AGAIN;
}


/* the request no longer waits for a flight */

static void
ngx_http_idv_cache_unwait(ngx_http_idv_cache_ctx_t *cctx)
{
    if (cctx->poll.timer_set) {
        ngx_del_timer(&cctx->poll);
    }

    if (cctx->poll.posted) {
        ngx_delete_posted_event(&cctx->poll);
    }

    if (cctx->queued) {
        ngx_queue_remove(&cctx->waiting);
        cctx->queued = 0;
    }

    if (cctx->role == NGX_HTTP_IDV_CACHE_WAITER) {
        cctx->role = 0;
    }
}


/*
 * The Initialize answer again, as the service gave it: a READY entry is
 * the head, the TransactionId and RequestId (for logs and variables),
 * then the envelope's bytes.
 */

static ngx_int_t
ngx_http_idv_cache_replay(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx, ngx_str_t *v, ngx_msec_t age)
{
    u_char     *p, *last;
    ngx_str_t   txid, rid;

    p = v->data + NGX_HTTP_IDV_CACHE_HEAD;
    last = v->data + v->len;

    if (ngx_http_idv_cache_string(&p, last, &txid) != NGX_OK
        || ngx_http_idv_cache_string(&p, last, &rid) != NGX_OK
        || p == last)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "idv: a malformed entry in idv_cache zone \"%V\"",
                      &cctx->zone->store->name);
        return NGX_ERROR;
    }

    if (ngx_http_idv_cache_age(r, age) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->transaction_id = txid;
    ctx->request_id = rid;
    ctx->code = ngx_http_idv_cache_success;
    ctx->cached = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: TransactionId \"%V\" again, issued %Mms ago, "
                   "MerchantBizId \"%V\"",
                   &ctx->transaction_id, age, &ctx->merchant_biz_id);

    return ngx_http_idv_reply(r, ctx, NGX_HTTP_OK, p, last, NULL);
}


/* the error of the flight this request waited for */

static ngx_int_t
ngx_http_idv_cache_replay_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_str_t *v)
{
    u_char      *p, *last, *code, *message;
    uint16_t     status;
    ngx_str_t    c, m, one = ngx_string("1");

    p = v->data + NGX_HTTP_IDV_CACHE_HEAD;
    last = v->data + v->len;

    if (last - p < 2) {
        return NGX_ERROR;
    }

    ngx_memcpy(&status, p, sizeof(uint16_t));
    p += 2;

    if (ngx_http_idv_cache_string(&p, last, &c) != NGX_OK
        || ngx_http_idv_cache_string(&p, last, &m) != NGX_OK)
    {
        return NGX_ERROR;
    }

    code = ngx_pnalloc(r->pool, c.len + 1 + m.len + 1);
    if (code == NULL) {
        return NGX_ERROR;
    }

    message = ngx_http_idv_cpymem(code, c.data, c.len);
    *message++ = '\0';
    *ngx_http_idv_cpymem(message, m.data, m.len) = '\0';

    if (status == NGX_HTTP_TOO_MANY_REQUESTS
        && ngx_http_idv_set_header(r, "Retry-After", &one, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->cached = 1;

    return ngx_http_idv_error(r, ctx, status, (char *) code, (char *) message);
}


/* Age: how old the answer given again is, as HTTP caches say it */

static ngx_int_t
ngx_http_idv_cache_age(ngx_http_request_t *r, ngx_msec_t age)
{
    ngx_str_t  value;

    value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    value.len = ngx_sprintf(value.data, "%M", age / 1000) - value.data;

    return ngx_http_idv_set_header(r, "Age", &value, 1);
}


/* ANSWER: the flight's answer is kept for its waiters and retries */

static ngx_int_t
ngx_http_idv_cache_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_http_idv_cache_ctx_t  *cctx;

    cctx = ngx_http_get_module_ctx(r, ngx_http_idv_cache_module);

    if (cctx == NULL) {
        return NGX_DECLINED;
    }

    if (cctx->batch.pending) {
        return NGX_AGAIN;
    }

    if (cctx->ran) {
        /* what this request wrote has been written */
        cctx->ran = 0;

        if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {
            cctx->role = 0;
            ngx_http_idv_cache_wake(&cctx->key);
        }

        return NGX_DECLINED;
    }

    if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {

        if (ctx->attempts == 0) {
            /* refused before the call: the flight is free again */
            rc = ngx_http_idv_cache_end_flight(r, cctx, NULL, 0);

        } else if (ctx->answer.upstream
                   && ctx->answer.status == NGX_HTTP_OK)
        {
            rc = ngx_http_idv_cache_land(r, ctx, cctx);

        } else {
            rc = ngx_http_idv_cache_fail(r, ctx, cctx);
        }

    } else {
        return NGX_DECLINED;
    }

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_cache_answer(r, ctx);
}


/* the flight's answer: the entry becomes READY, waiters get it */

static ngx_int_t
ngx_http_idv_cache_land(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   v;

    len = ctx->answer.end - ctx->answer.start;

    if (ctx->transaction_id.len == 0 || ctx->transaction_id.len > 255
        || ctx->request_id.len > 255)
    {
        /* nothing to give again: the waiters ask for themselves */
        return ngx_http_idv_cache_end_flight(r, cctx, NULL, 0);
    }

    v.len = NGX_HTTP_IDV_CACHE_HEAD + 1 + ctx->transaction_id.len
            + 1 + ctx->request_id.len + len;
    v.data = ngx_pnalloc(r->pool, v.len);
    if (v.data == NULL) {
        return ngx_http_idv_cache_end_flight(r, cctx, NULL, 0);
    }

    p = ngx_cpymem(v.data, cctx->head, NGX_HTTP_IDV_CACHE_HEAD);
    v.data[0] = NGX_HTTP_IDV_CACHE_READY;

    *p++ = (u_char) ctx->transaction_id.len;
    p = ngx_cpymem(p, ctx->transaction_id.data, ctx->transaction_id.len);
    *p++ = (u_char) ctx->request_id.len;
    p = ngx_http_idv_cpymem(p, ctx->request_id.data, ctx->request_id.len);
    ngx_memcpy(p, ctx->answer.start, len);

    return ngx_http_idv_cache_end_flight(r, cctx, &v, cctx->zone->ttl);
}


/*
 * The flight failed: nothing is kept for the key, but the error stays a
 * moment so that the requests that waited for this flight get it too
 * instead of each making a call of its own.
 */

static ngx_int_t
ngx_http_idv_cache_fail(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    u_char      *p;
    cJSON       *item;
    uint16_t     status;
    ngx_str_t    v, code, message;

    status = (uint16_t) ctx->answer.status;

    if (status < NGX_HTTP_BAD_REQUEST) {
        status = NGX_HTTP_BAD_GATEWAY;
    }

    code = ctx->code;

    if (ctx->answer.error) {
        message.data = (u_char *) (ctx->answer.message ? ctx->answer.message
                                                       : "");
        message.len = ngx_strlen(message.data);

    } else {
        /* the service's own error: its Code and Message */
        item = cJSON_GetObjectItemCaseSensitive(
                                       ngx_http_idv_answer_json(r, ctx),
                                       "Message");

        if (cJSON_IsString(item)) {
            message.data = (u_char *) item->valuestring;
            message.len = ngx_strlen(message.data);

        } else {
            ngx_str_set(&message, "");
        }
    }

    code.len = ngx_min(code.len, 255);
    message.len = ngx_min(message.len, 255);

    v.len = NGX_HTTP_IDV_CACHE_HEAD + 2 + 1 + code.len + 1 + message.len;
    v.data = ngx_pnalloc(r->pool, v.len);
    if (v.data == NULL) {
        return ngx_http_idv_cache_end_flight(r, cctx, NULL, 0);
    }

    p = ngx_cpymem(v.data, cctx->head, NGX_HTTP_IDV_CACHE_HEAD);
    v.data[0] = NGX_HTTP_IDV_CACHE_FAILED;

    p = ngx_cpymem(p, &status, sizeof(uint16_t));
    *p++ = (u_char) code.len;
    p = ngx_http_idv_cpymem(p, code.data, code.len);
    *p++ = (u_char) message.len;
    (void) ngx_http_idv_cpymem(p, message.data, message.len);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: flight %uL failed with HTTP %ui",
                   cctx->flight, (ngx_uint_t) status);

    return ngx_http_idv_cache_end_flight(r, cctx, &v,
                                         NGX_HTTP_IDV_CACHE_FAILED_KEEP);
}


/*
 * The flight's entry becomes value (an answer that may be evicted), or
 * goes (value NULL) so that a waiter leads; only while it is still this
 * request's flight, which another may have taken over as abandoned.
 */

static ngx_int_t
ngx_http_idv_cache_end_flight(ngx_http_request_t *r,
    ngx_http_idv_cache_ctx_t *cctx, ngx_str_t *value, ngx_msec_t ttl)
{
    ngx_int_t  rc;

    ngx_memzero(&cctx->op, sizeof(ngx_http_idv_store_op_t));

    cctx->op.store = cctx->zone->store;
    cctx->op.key = cctx->key;
    cctx->op.op = value ? NGX_HTTP_IDV_STORE_CAS : NGX_HTTP_IDV_STORE_DELETE;
    cctx->op.expect.data = cctx->head;
    cctx->op.expect.len = NGX_HTTP_IDV_CACHE_HEAD;

    if (value) {
        cctx->op.value = *value;
        cctx->op.ttl = ttl;
    }

    rc = ngx_http_idv_cache_run(r, cctx);

    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return NGX_OK;
}


/*
 * The request ends (answered, the client closed, the gateway failed
 * before the call): a flight it still leads is released, a waiter stops.
 */

static void
ngx_http_idv_cache_cleanup(void *data)
{
    ngx_http_idv_cache_ctx_t  *cctx = data;

    ngx_http_idv_store_op_t     op;

    ngx_http_idv_cache_unwait(cctx);

    if (cctx->role != NGX_HTTP_IDV_CACHE_LEADER) {
        return;
    }

    cctx->role = 0;

    /* fire and forget: the request is gone; the entry expires anyway */

    ngx_memzero(&op, sizeof(ngx_http_idv_store_op_t));

    op.store = cctx->zone->store;
    op.key = cctx->key;
    op.op = NGX_HTTP_IDV_STORE_DELETE;
    op.expect.data = cctx->head;
    op.expect.len = NGX_HTTP_IDV_CACHE_HEAD;

    ngx_http_idv_state_forget(cctx->request, &op);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "idv cache: flight %uL released without an answer",
                   cctx->flight);

    ngx_http_idv_cache_wake(&cctx->key);
}


static ngx_int_t
ngx_http_idv_cache_run(ngx_http_request_t *r, ngx_http_idv_cache_ctx_t *cctx)
{
    cctx->batch.ops = &cctx->op;
    cctx->batch.nops = 1;
    cctx->ran = 1;

    return ngx_http_idv_state_call(r, &cctx->batch);
}


static void
ngx_http_idv_cache_poll_handler(ngx_event_t *ev)
{
    ngx_http_idv_resume(ev->data);
}


/* waiters in this worker look again now rather than at their next poll */

static void
ngx_http_idv_cache_wake(ngx_str_t *key)
{
    ngx_queue_t               *q;
    ngx_http_idv_cache_ctx_t  *w;

    for (q = ngx_queue_head(&ngx_http_idv_cache_waiters);
         q != ngx_queue_sentinel(&ngx_http_idv_cache_waiters);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_idv_cache_ctx_t, waiting);

        if (w->key.len != key->len
            || ngx_memcmp(w->key.data, key->data, key->len) != 0)
        {
            continue;
        }

        if (w->poll.timer_set) {
            ngx_del_timer(&w->poll);
        }

        if (!w->poll.posted) {
            ngx_post_event(&w->poll, &ngx_posted_events);
        }
    }
}


/*
 * The request's identity: every parameter but those of the key that the
 * gateway sets, sorted, each name and value length-prefixed (values may
 * hold any byte); their SipHash-2-4-128.  The hash is keyed, so that a
 * backend cannot choose parameters that collide with another request's
 * (which would hand it that request's answer as a retry's), with a key
 * derived from the location's AccessKey secret: backends do not know it,
 * and every worker and every gateway host with the same credentials
 * derives the same key, so that the digests they store compare.
 */

static ngx_int_t
ngx_http_idv_cache_digest(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    u_char *out)
{
    u_char                  md[32], *buf, *w;
    size_t                  i, j, n, len;
    const char            **skip;
    ngx_str_t              *s, *secret;
    ngx_http_idv_param_t   *p, *params;

    secret = &ctx->conf->access_key_secret;

    if (ngx_http_idv_cache_dkey_of != secret->data
        || ngx_http_idv_cache_dkey_len != secret->len)
    {
        if (ngx_http_idv_hmac_sha256(secret->data, secret->len,
                                     (u_char *) "idv cache: parameters", 21,
                                     md)
            != 0)
        {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_http_idv_cache_dkey, md, NGX_HTTP_IDV_SIPHASH_KEY_LEN);
        OPENSSL_cleanse(md, sizeof(md));

        ngx_http_idv_cache_dkey_of = secret->data;
        ngx_http_idv_cache_dkey_len = secret->len;
    }

    params = ngx_palloc(r->pool,
                        ctx->req.nparams * sizeof(ngx_http_idv_param_t) + 1);
    if (params == NULL) {
        return NGX_ERROR;
    }

    n = 0;
    len = 0;

    for (i = 0; i < ctx->req.nparams; i++) {
        p = &ctx->req.params[i];

        for (skip = ngx_http_idv_cache_unsigned; *skip; skip++) {
            if (p->key.len == ngx_strlen(*skip)
                && ngx_strncmp(p->key.data, *skip, p->key.len) == 0)
            {
                break;
            }
        }

        if (*skip == NULL) {
            params[n++] = *p;
            len += 4 + p->key.len + 4 + p->value.len;
        }
    }

    ngx_http_idv_params_sort(params, n);

    buf = ngx_pnalloc(r->pool, len + 1);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    w = buf;

    for (i = 0; i < n; i++) {
        for (j = 0; j < 2; j++) {
            s = ngx_http_idv_ngx_str(j ? &params[i].value : &params[i].key);

            *w++ = (u_char) (s->len >> 24);
            *w++ = (u_char) (s->len >> 16);
            *w++ = (u_char) (s->len >> 8);
            *w++ = (u_char) s->len;

            w = ngx_http_idv_cpymem(w, s->data, s->len);
        }
    }

    ngx_http_idv_siphash(out, 16, buf, len, ngx_http_idv_cache_dkey);

    return NGX_OK;
}


/* a string with its size in one byte, from a stored value */

static ngx_int_t
ngx_http_idv_cache_string(u_char **p, u_char *last, ngx_str_t *s)
{
    if (*p >= last || (size_t) (last - *p) < 1 + (size_t) **p) {
        return NGX_ERROR;
    }

    s->len = **p;
    s->data = *p + 1;

    *p += 1 + s->len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_cache_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;

    var = ngx_http_add_variable(cf, &ngx_http_idv_cache_status_name,
                                NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_idv_cache_variable;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_idv_cache_ctx_t  *cctx;

    cctx = ngx_http_get_module_ctx(r->main, ngx_http_idv_cache_module);

    if (cctx == NULL || cctx->status.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = cctx->status.len;
    v->data = cctx->status.data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_cache_init(ngx_conf_t *cf)
{
    if (ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_STATE,
                                 ngx_http_idv_cache_handler)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_ANSWER,
                                    ngx_http_idv_cache_answer);
}


static void *
ngx_http_idv_cache_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idv_cache_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cache_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&cmcf->zones, cf->pool, 2,
                       sizeof(ngx_http_idv_cache_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return cmcf;
}


static void *
ngx_http_idv_cache_create_conf(ngx_conf_t *cf)
{
    ngx_http_idv_cache_conf_t  *conf;

    /*
     * set by ngx_pcalloc():
     *
     *     conf->name = { 0, NULL };
     */

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cache_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->zone = NGX_CONF_UNSET_PTR;
    conf->results = NGX_CONF_UNSET_MSEC;
    conf->wait = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_idv_cache_merge_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_cache_conf_t *prev = parent;
    ngx_http_idv_cache_conf_t *conf = child;

    ngx_uint_t                        i;
    ngx_http_idv_loc_conf_t          *lcf;
    ngx_http_idv_cache_zone_t       **zone;
    ngx_http_idv_cache_main_conf_t   *cmcf;

    if (conf->zone == NGX_CONF_UNSET_PTR && conf->name.len == 0) {
        conf->zone = prev->zone;
        conf->name = prev->name;
    }

    if (conf->zone == NGX_CONF_UNSET_PTR) {
        conf->zone = NULL;
    }

    ngx_conf_merge_msec_value(conf->results, prev->results, 0);
    ngx_conf_merge_msec_value(conf->wait, prev->wait, 10000);

    /* a name is resolved once the http block has declared every zone */

    if (conf->zone == NULL && conf->name.len) {
        cmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_idv_cache_module);
        zone = cmcf->zones.elts;

        for (i = 0; i < cmcf->zones.nelts; i++) {
            if (zone[i]->store->name.len == conf->name.len
                && ngx_strncmp(zone[i]->store->name.data, conf->name.data,
                               conf->name.len)
                   == 0)
            {
                conf->zone = zone[i];
                break;
            }
        }

        if (conf->zone == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: \"idv_cache %V\" names no zone: "
                               "declare it with \"idv_cache_zone "
                               "zone=%V:SIZE\" in http",
                               ngx_http_idv_conf_where(cf), &conf->name,
                               &conf->name);
            return NGX_CONF_ERROR;
        }
    }

    lcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if ((lcf->op || lcf->dialect == NGX_HTTP_IDV_DIALECT_SDK)
        && conf->results && !ngx_http_idv_tenancy_configured(cf))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_cache_results\" in a location that "
                           "calls the API needs \"idv_tenancy_zone\": "
                           "results are kept with their owner",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* idv_cache_zone zone=NAME:SIZE [ttl=TIME]; */

static char *
ngx_http_idv_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cache_main_conf_t *cmcf = conf;

    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_http_idv_cache_zone_t   *zone, **zp;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_strncmp(value[i].data, "ownership=", 10) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"ownership=\" is gone from "
                               "\"idv_cache_zone\": who owns a transaction "
                               "is kept by \"idv_tenancy_zone zone=NAME:SIZE "
                               "ttl=TIME\"");
            return NGX_CONF_ERROR;
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cache_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->ttl = NGX_HTTP_IDV_CACHE_TTL;

    zone->store = ngx_http_idv_store_zone(cf, "cache",
                                          &ngx_http_idv_cache_module,
                                          &zone->ttl);
    if (zone->store == NULL) {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&cmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cache_conf_t *ccf = conf;

    ngx_str_t  *value;

    if (ccf->zone != NGX_CONF_UNSET_PTR || ccf->name.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ccf->zone = NULL;
        return NGX_CONF_OK;
    }

    /* resolved at merge time, when every zone is declared */
    ccf->name = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_cache_results(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cache_conf_t *ccf = conf;

    ngx_str_t  *value;
    ngx_int_t   t;

    if (ccf->results != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ccf->results = 0;
        return NGX_CONF_OK;
    }

    t = ngx_parse_time(&value[1], 0);

    if (t == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", expected a time "
                           "or \"off\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    ccf->results = (ngx_msec_t) t;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_cache_init_process(ngx_cycle_t *cycle)
{
    ngx_queue_init(&ngx_http_idv_cache_waiters);

    return NGX_OK;
}


static void
ngx_http_idv_cache_exit(ngx_cycle_t *cycle)
{
    OPENSSL_cleanse(ngx_http_idv_cache_dkey, sizeof(ngx_http_idv_cache_dkey));

    ngx_http_idv_cache_dkey_of = NULL;
    ngx_http_idv_cache_dkey_len = 0;
}
