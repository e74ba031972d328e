
/*
 * ngx_http_idv_module: the TransactionId cache.
 *
 * Every Initialize is billable and Alibaba does not check MerchantBizId
 * for uniqueness, so the gateway makes Initialize idempotent: the answer
 * of the first call is kept under (tenant, ProductCode, MerchantBizId) for
 * ttl, and concurrent duplicates share one upstream call (a single
 * flight).  The same entries remember which tenant owns each
 * TransactionId, so that one tenant cannot read another's results.
 *
 * One shared memory zone per idv_cache_zone: a slab pool holding the
 * entries, two red-black trees over them (by key digest, by
 * TransactionId) and queues in the order of issue.  Every lifetime counts
 * from the issue time, so those queues are also the order of expiry and
 * of eviction when the zone is full.
 */


#include "ngx_http_idv_module.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>


/* entry states */
#define NGX_HTTP_IDV_CACHE_FLIGHT     1     /* the first call is upstream */
#define NGX_HTTP_IDV_CACHE_FAILED     2     /* it failed: its error, briefly */
#define NGX_HTTP_IDV_CACHE_READY      3     /* Initialize answer, within ttl */
#define NGX_HTTP_IDV_CACHE_OWNER      4     /* TransactionId -> tenant only */

/* how a TransactionId is kept: 32 hex digits in 16 bytes, else a digest */
#define NGX_HTTP_IDV_CACHE_TX_LOWER   1
#define NGX_HTTP_IDV_CACHE_TX_UPPER   2
#define NGX_HTTP_IDV_CACHE_TX_DIGEST  3

/* what the cache does for a request */
#define NGX_HTTP_IDV_CACHE_PRODUCER   0     /* may answer a TransactionId */
#define NGX_HTTP_IDV_CACHE_INITIALIZE 1     /* idempotent */
#define NGX_HTTP_IDV_CACHE_CONSUMER   2     /* names a TransactionId */

/* a request's part in a flight */
#define NGX_HTTP_IDV_CACHE_LEADER     1
#define NGX_HTTP_IDV_CACHE_WAITER     2

/* the strings of a READY entry */
#define NGX_HTTP_IDV_CACHE_REQUEST_ID       0
#define NGX_HTTP_IDV_CACHE_TRANSACTION_ID   1   /* only if not hex */
#define NGX_HTTP_IDV_CACHE_TRANSACTION_URL  2
#define NGX_HTTP_IDV_CACHE_PROTOCOL         3
#define NGX_HTTP_IDV_CACHE_CLIENT_CFG       4
#define NGX_HTTP_IDV_CACHE_NSTRINGS         5

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

#define NGX_HTTP_IDV_CACHE_REPORT     60000 /* eviction reports, at most */
#define NGX_HTTP_IDV_CACHE_SWEEP      8     /* expired entries per lookup */
#define NGX_HTTP_IDV_CACHE_RESULT_MAX 16384 /* CheckResult answers kept */

#define NGX_HTTP_IDV_CACHE_TTL        (30 * 60 * 1000)
#define NGX_HTTP_IDV_CACHE_OWNERSHIP  (24 * 60 * 60 * 1000)


typedef struct ngx_http_idv_cache_owner_s  ngx_http_idv_cache_owner_t;


/* the Initialize answer of a READY entry */
typedef struct {
    uint32_t                        len[NGX_HTTP_IDV_CACHE_NSTRINGS];
    uint32_t                        present;    /* bit per string */
    u_char                          data[1];
} ngx_http_idv_cache_data_t;


/* the answer of a FAILED flight */
typedef struct {
    uint32_t                        status;
    uint32_t                        code_len;
    uint32_t                        message_len;
    u_char                          data[1];
} ngx_http_idv_cache_error_t;


/* a final CheckResult answer */
typedef struct {
    ngx_queue_t                     queue;      /* the zone's, oldest last */
    ngx_http_idv_cache_owner_t     *owner;
    ngx_msec_t                      time;
    ngx_msec_t                      expire;
    uint32_t                        len;
    uint8_t                         passed;
    u_char                          data[1];
} ngx_http_idv_cache_result_t;


/*
 * What is kept of every transaction for as long as "ownership=": which
 * tenant owns the TransactionId.  The tenant and MerchantBizId are kept
 * as digests (SHA-256, truncated): they are compared, never shown.
 * 112 bytes on 64-bit platforms, a 128-byte slab slot.
 */

struct ngx_http_idv_cache_owner_s {
    ngx_rbtree_node_t               tx;         /* by TransactionId */
    ngx_queue_t                     queue;      /* all entries, newest first */
    ngx_msec_t                      time;       /* issued, or flight started
                                                   or failed */
    ngx_http_idv_cache_result_t    *result;
    u_char                          txid[16];
    u_char                          tenant[8];
    u_char                          biz[8];
    uint8_t                         state;
    uint8_t                         txform;     /* 0: no TransactionId */
};


/*
 * An entry under its key (tenant, ProductCode, MerchantBizId) while the
 * flight is on and for ttl after: the owner record and what Initialize
 * needs.  224 bytes, a 256-byte slot; past ttl it shrinks to the owner
 * record.
 */

typedef struct {
    ngx_http_idv_cache_owner_t      owner;      /* first */
    ngx_rbtree_node_t               node;       /* by key */
    ngx_queue_t                     ready;      /* READY ones, newest first */
    uint64_t                        flight;
    void                           *data;       /* READY: _data_t,
                                                   FAILED: _error_t */
    u_char                          key[16];    /* tenant, product, biz id */
    u_char                          digest[16]; /* the signed parameters */
    ngx_pid_t                       pid;        /* the flight's worker */
} ngx_http_idv_cache_node_t;


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_rbtree_t                    txtree;
    ngx_rbtree_node_t               txsentinel;
    ngx_queue_t                     queue;
    ngx_queue_t                     ready;
    ngx_queue_t                     results;
    uint64_t                        flights;
    ngx_msec_t                      report;     /* next eviction report */
    ngx_uint_t                      evicted;    /* since the last one */
} ngx_http_idv_cache_shctx_t;


typedef struct {
    ngx_http_idv_cache_shctx_t     *sh;
    ngx_slab_pool_t                *shpool;
    ngx_shm_zone_t                 *shm_zone;
    ngx_msec_t                      ttl;
    ngx_msec_t                      ownership;
} ngx_http_idv_cache_zone_t;


typedef struct {
    ngx_shm_zone_t                 *zone;
    ngx_flag_t                      strict;
    ngx_msec_t                      results;
    ngx_msec_t                      wait;
} ngx_http_idv_cache_conf_t;


typedef struct {
    ngx_http_idv_cache_zone_t      *zone;

    ngx_event_t                     poll;
    ngx_queue_t                     waiting;    /* this worker's waiters */
    ngx_msec_t                      deadline;
    uint64_t                        flight;     /* led or awaited */

    u_char                          key[16];
    u_char                          digest[16];
    u_char                          tenant[8];
    u_char                          biz[8];
    u_char                          txid[16];   /* the request's */
    ngx_uint_t                      txform;

    ngx_str_t                       status;     /* $idv_cache_status */

    unsigned                        kind:2;
    unsigned                        role:2;
    unsigned                        keyed:1;
    unsigned                        queued:1;
    unsigned                        store:1;    /* keep the CheckResult */
    unsigned                        record:1;   /* record the owner */
} ngx_http_idv_cache_ctx_t;


static ngx_int_t ngx_http_idv_cache_stage(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_http_idv_cache_ctx_t *ngx_http_idv_cache_create(
    ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_conf_t *conf);
static ngx_int_t ngx_http_idv_cache_keys(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_initialize(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static void ngx_http_idv_cache_unwait(ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_wait(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_int_t ngx_http_idv_cache_owner(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static ngx_uint_t ngx_http_idv_cache_result_allowed(ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cache_send_data(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_data_t *d, u_char *txid,
    ngx_uint_t txform, ngx_msec_t age);
static ngx_int_t ngx_http_idv_cache_send_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_error_t *err);
static ngx_int_t ngx_http_idv_cache_send_result(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_result_t *res,
    ngx_msec_t age);
static ngx_int_t ngx_http_idv_cache_age(ngx_http_request_t *r,
    ngx_msec_t age);

static ngx_int_t ngx_http_idv_cache_answer(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_cache_json_cleanup(void *data);
static void ngx_http_idv_cache_land(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx, cJSON *root);
static void ngx_http_idv_cache_fail(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx, cJSON *root,
    ngx_uint_t status);
static void ngx_http_idv_cache_store_result(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx);
static void ngx_http_idv_cache_record(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx, cJSON *root);
static void ngx_http_idv_cache_cleanup(void *data);
static void ngx_http_idv_cache_release(ngx_http_idv_cache_ctx_t *cctx);
static void ngx_http_idv_cache_poll_handler(ngx_event_t *ev);
static void ngx_http_idv_cache_wake(u_char *key);

static ngx_http_idv_cache_node_t *ngx_http_idv_cache_lookup(
    ngx_http_idv_cache_shctx_t *sh, u_char *key);
static ngx_http_idv_cache_owner_t *ngx_http_idv_cache_lookup_tx(
    ngx_http_idv_cache_shctx_t *sh, u_char *txid, ngx_uint_t txform);
static void ngx_http_idv_cache_insert_key(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_idv_cache_insert_tx(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_idv_cache_insert_owner(ngx_http_idv_cache_shctx_t *sh,
    ngx_http_idv_cache_owner_t *o, u_char *txid, ngx_uint_t txform);
static ngx_http_idv_cache_node_t *ngx_http_idv_cache_new(
    ngx_http_idv_cache_zone_t *zone, ngx_http_idv_cache_ctx_t *cctx,
    ngx_log_t *log);
static void ngx_http_idv_cache_take(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_node_t *e, ngx_http_idv_cache_ctx_t *cctx);
static ngx_uint_t ngx_http_idv_cache_abandoned(ngx_http_idv_cache_node_t *e,
    ngx_msec_t now);
static void *ngx_http_idv_cache_alloc(ngx_http_idv_cache_zone_t *zone,
    size_t size, ngx_http_idv_cache_owner_t *keep, ngx_log_t *log);
static void ngx_http_idv_cache_expire(ngx_http_idv_cache_zone_t *zone,
    ngx_msec_t now, ngx_log_t *log);
static void ngx_http_idv_cache_demote(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_node_t *e, ngx_log_t *log);
static void ngx_http_idv_cache_drop_result(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_owner_t *o);
static void ngx_http_idv_cache_delete(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_owner_t *o);
static size_t ngx_http_idv_cache_data_size(ngx_http_idv_cache_data_t *d);
static size_t ngx_http_idv_cache_slot(size_t size);

static ngx_int_t ngx_http_idv_cache_txid(ngx_str_t *id, u_char *out,
    ngx_uint_t *form);
static ngx_int_t ngx_http_idv_cache_hash(const char *domain, ngx_str_t *parts,
    ngx_uint_t n, u_char *out, size_t len);
static ngx_int_t ngx_http_idv_cache_hash_begin(const char *domain);
static void ngx_http_idv_cache_hash_add(u_char *data, size_t len);
static ngx_int_t ngx_http_idv_cache_hash_end(u_char *out, size_t len);

static ngx_int_t ngx_http_idv_cache_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_idv_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_idv_cache_init(ngx_conf_t *cf);
static void *ngx_http_idv_cache_create_conf(ngx_conf_t *cf);
static char *ngx_http_idv_cache_merge_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_cache_results(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_cache_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_idv_cache_init_process(ngx_cycle_t *cycle);
static void ngx_http_idv_cache_exit(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_idv_cache_commands[] = {

    { ngx_string("idv_cache_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_idv_cache_zone,
      0,
      0,
      NULL },

    { ngx_string("idv_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_cache_strict"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cache_conf_t, strict),
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

    NULL,                                  /* create main configuration */
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


static ngx_str_t  ngx_http_idv_cache_status_name =
    ngx_string("idv_cache_status");

static ngx_str_t  ngx_http_idv_cache_hit = ngx_string("HIT");
static ngx_str_t  ngx_http_idv_cache_miss = ngx_string("MISS");
static ngx_str_t  ngx_http_idv_cache_shared = ngx_string("SHARED");
static ngx_str_t  ngx_http_idv_cache_conflict = ngx_string("CONFLICT");
static ngx_str_t  ngx_http_idv_cache_busy = ngx_string("BUSY");
static ngx_str_t  ngx_http_idv_cache_forbidden = ngx_string("FORBIDDEN");
static ngx_str_t  ngx_http_idv_cache_bypass = ngx_string("BYPASS");

static ngx_str_t  ngx_http_idv_cache_success = ngx_string("Success");

static const char  *ngx_http_idv_cache_names[NGX_HTTP_IDV_CACHE_NSTRINGS] = {
    "RequestId", "TransactionId", "TransactionUrl", "Protocol", "ClientCfg"
};

/* not part of the request's identity: the key has it */
static const char  *ngx_http_idv_cache_unsigned[] = {
    "ProductCode",
    NULL
};

/* this worker's waiters, woken when a flight lands here */
static ngx_queue_t   ngx_http_idv_cache_waiters;

/* SHA-256, fetched once per process */
static EVP_MD       *ngx_http_idv_cache_md;
static EVP_MD_CTX   *ngx_http_idv_cache_md_ctx;
static ngx_uint_t    ngx_http_idv_cache_md_error;


static ngx_int_t
ngx_http_idv_cache_stage(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_http_idv_cache_ctx_t   *cctx;
    ngx_http_idv_cache_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_idv_cache_module);

    if (conf->zone == NULL) {
        return NGX_DECLINED;
    }

    cctx = ngx_http_get_module_ctx(r, ngx_http_idv_cache_module);

    if (cctx == NULL) {
        cctx = ngx_http_idv_cache_create(r, ctx, conf);
        if (cctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, cctx, ngx_http_idv_cache_module);
    }

    switch (cctx->kind) {

    case NGX_HTTP_IDV_CACHE_INITIALIZE:
        return ngx_http_idv_cache_initialize(r, ctx, cctx);

    case NGX_HTTP_IDV_CACHE_CONSUMER:
        return ngx_http_idv_cache_owner(r, ctx, cctx);

    default: /* NGX_HTTP_IDV_CACHE_PRODUCER */
        cctx->status = ngx_http_idv_cache_bypass;
        cctx->record = 1;
        return NGX_DECLINED;
    }
}


static ngx_http_idv_cache_ctx_t *
ngx_http_idv_cache_create(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_conf_t *conf)
{
    ngx_str_t                  biz;
    ngx_pool_cleanup_t        *cln;
    ngx_http_idv_param_t      *p;
    ngx_http_idv_cache_ctx_t  *cctx;

    cctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_cache_ctx_t));
    if (cctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_idv_cache_cleanup;
    cln->data = cctx;

    cctx->zone = conf->zone->data;

    if (ngx_http_idv_cache_hash("tenant", &ctx->tenant, 1, cctx->tenant,
                                sizeof(cctx->tenant))
        != NGX_OK)
    {
        return NULL;
    }

    p = ngx_http_idv_req_get(&ctx->req, "MerchantBizId");

    if (p) {
        biz = *ngx_http_idv_ngx_str(&p->value);
    } else {
        ngx_str_null(&biz);
    }

    if (ngx_http_idv_cache_hash("biz", &biz, 1, cctx->biz, sizeof(cctx->biz))
        != NGX_OK)
    {
        return NULL;
    }

    if (ctx->conf->op->flags & NGX_HTTP_IDV_OP_CREATES_TX
        && ctx->conf->op->flags & NGX_HTTP_IDV_OP_BILLABLE
        && ngx_http_idv_op_param(ctx->conf->op, (u_char *) "CallbackToken",
                                 sizeof("CallbackToken") - 1))
    {
        /* an Initialize: a transaction the client completes later */
        cctx->kind = NGX_HTTP_IDV_CACHE_INITIALIZE;

    } else if (ctx->transaction_id.len) {
        cctx->kind = NGX_HTTP_IDV_CACHE_CONSUMER;

    } else {
        cctx->kind = NGX_HTTP_IDV_CACHE_PRODUCER;
    }

    return cctx;
}


/*
 * The key: tenant, ProductCode and MerchantBizId.  The digest: every
 * parameter but those of the key that the gateway sets, sorted, each
 * name and value length-prefixed (values may hold any byte).
 */

static ngx_int_t
ngx_http_idv_cache_keys(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    size_t                  i, n;
    ngx_str_t               parts[3];
    const char            **skip;
    ngx_http_idv_param_t   *p, *params;

    p = ngx_http_idv_req_get(&ctx->req, "MerchantBizId");

    if (p == NULL || p->value.len == 0) {
        return NGX_DECLINED;
    }

    parts[0] = ctx->tenant;
    parts[1] = *ngx_http_idv_ngx_str(&ctx->req.product);
    parts[2] = *ngx_http_idv_ngx_str(&p->value);

    if (ngx_http_idv_cache_hash("key", parts, 3, cctx->key,
                                sizeof(cctx->key))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    params = ngx_palloc(r->pool,
                        ctx->req.nparams * sizeof(ngx_http_idv_param_t) + 1);
    if (params == NULL) {
        return NGX_ERROR;
    }

    n = 0;

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
        }
    }

    ngx_http_idv_params_sort(params, n);

    if (ngx_http_idv_cache_hash_begin("params") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_http_idv_cache_hash_add(params[i].key.data, params[i].key.len);
        ngx_http_idv_cache_hash_add(params[i].value.data,
                                    params[i].value.len);
    }

    if (ngx_http_idv_cache_hash_end(cctx->digest, sizeof(cctx->digest))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cctx->keyed = 1;

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
    u_char                      txid[16];
    size_t                      size;
    ngx_int_t                   rc;
    ngx_msec_t                  now, age;
    ngx_uint_t                  txform;
    ngx_slab_pool_t            *shpool;
    ngx_http_idv_cache_node_t  *e;
    ngx_http_idv_cache_data_t  *d;
    ngx_http_idv_cache_zone_t  *zone;
    ngx_http_idv_cache_error_t *err;

    if (!cctx->keyed) {
        rc = ngx_http_idv_cache_keys(r, ctx, cctx);

        if (rc == NGX_DECLINED) {
            cctx->status = ngx_http_idv_cache_bypass;
            cctx->record = 1;
            return NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    zone = cctx->zone;
    shpool = zone->shpool;
    now = ngx_current_msec;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_idv_cache_expire(zone, now, r->connection->log);

    e = ngx_http_idv_cache_lookup(zone->sh, cctx->key);

    if (e && e->owner.state == NGX_HTTP_IDV_CACHE_READY
        && (ngx_msec_int_t) (now - e->owner.time) >= (ngx_msec_int_t) zone->ttl)
    {
        ngx_http_idv_cache_demote(zone, e, r->connection->log);
        e = NULL;
    }

    if (e == NULL) {
        e = ngx_http_idv_cache_new(zone, cctx, r->connection->log);

        if (e == NULL) {
            ngx_shmtx_unlock(&shpool->mutex);

            /* not even one entry fits: go on without the cache */

            cctx->status = ngx_http_idv_cache_bypass;
            cctx->record = 1;
            return NGX_DECLINED;
        }

        goto leader;
    }

    switch (e->owner.state) {

    case NGX_HTTP_IDV_CACHE_READY:

        if (ngx_memcmp(e->digest, cctx->digest, sizeof(e->digest)) != 0) {
            goto conflict;
        }

        d = e->data;
        size = ngx_http_idv_cache_data_size(d);

        ngx_memcpy(txid, e->owner.txid, sizeof(txid));
        txform = e->owner.txform;
        age = now - e->owner.time;

        d = ngx_palloc(r->pool, size);
        if (d) {
            ngx_memcpy(d, e->data, size);
        }

        ngx_shmtx_unlock(&shpool->mutex);

        if (d == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_idv_cache_age(r, age) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cctx->status = (cctx->role == NGX_HTTP_IDV_CACHE_WAITER)
                       ? ngx_http_idv_cache_shared : ngx_http_idv_cache_hit;
        ngx_http_idv_cache_unwait(cctx);

        return ngx_http_idv_cache_send_data(r, ctx, d, txid, txform, age);

    case NGX_HTTP_IDV_CACHE_FLIGHT:

        if (ngx_http_idv_cache_abandoned(e, now)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idv: the Initialize in flight for MerchantBizId "
                          "\"%V\" was abandoned by process %P; "
                          "taking it over", &ctx->merchant_biz_id, e->pid);
            ngx_http_idv_cache_take(zone, e, cctx);
            goto leader;
        }

        if (ngx_memcmp(e->digest, cctx->digest, sizeof(e->digest)) != 0) {
            goto conflict;
        }

        cctx->flight = e->flight;

        ngx_shmtx_unlock(&shpool->mutex);

        return ngx_http_idv_cache_wait(r, ctx, cctx);

    default: /* NGX_HTTP_IDV_CACHE_FAILED */

        if (cctx->role != NGX_HTTP_IDV_CACHE_WAITER
            || e->flight != cctx->flight)
        {
            /* a new request is a new attempt */
            ngx_http_idv_cache_take(zone, e, cctx);
            goto leader;
        }

        err = e->data;
        size = offsetof(ngx_http_idv_cache_error_t, data)
               + err->code_len + err->message_len;

        err = ngx_palloc(r->pool, size);
        if (err) {
            ngx_memcpy(err, e->data, size);
        }

        ngx_shmtx_unlock(&shpool->mutex);

        if (err == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cctx->status = ngx_http_idv_cache_shared;
        ngx_http_idv_cache_unwait(cctx);

        return ngx_http_idv_cache_send_error(r, ctx, err);
    }

leader:

    ngx_http_idv_cache_unwait(cctx);

    cctx->flight = e->flight;
    cctx->role = NGX_HTTP_IDV_CACHE_LEADER;
    cctx->status = ngx_http_idv_cache_miss;

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: flight %uL for MerchantBizId \"%V\"",
                   cctx->flight, &ctx->merchant_biz_id);

    return NGX_DECLINED;

conflict:

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_http_idv_cache_unwait(cctx);
    cctx->status = ngx_http_idv_cache_conflict;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "idv: MerchantBizId \"%V\" was given with other parameters "
                  "within the ttl of idv_cache zone \"%V\"",
                  &ctx->merchant_biz_id, &zone->shm_zone->shm.name);

    return ngx_http_idv_error(r, ctx, NGX_HTTP_CONFLICT,
                              "Gateway.IdempotencyConflict",
                              "This MerchantBizId was used with other "
                              "parameters; use a new MerchantBizId for a new "
                              "verification");
}


/* the request no longer waits for a flight (it may lead one now) */

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

    cctx->role = 0;
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
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
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


/*
 * A request naming a TransactionId: refused if the TransactionId belongs
 * to another tenant (or, with idv_cache_strict, is not known at all); a
 * final CheckResult answer kept for idv_cache_results is given again.
 */

static ngx_int_t
ngx_http_idv_cache_owner(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx)
{
    size_t                        size;
    ngx_msec_t                    now, age;
    ngx_uint_t                    allowed;
    ngx_slab_pool_t              *shpool;
    ngx_http_idv_cache_owner_t   *o;
    ngx_http_idv_cache_zone_t    *zone;
    ngx_http_idv_cache_conf_t    *conf;
    ngx_http_idv_cache_result_t  *res;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_idv_cache_module);

    if (ngx_http_idv_cache_txid(&ctx->transaction_id, cctx->txid,
                                &cctx->txform)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    allowed = ngx_http_idv_cache_result_allowed(ctx);

    zone = cctx->zone;
    shpool = zone->shpool;
    now = ngx_current_msec;
    res = NULL;
    age = 0;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_idv_cache_expire(zone, now, r->connection->log);

    o = ngx_http_idv_cache_lookup_tx(zone->sh, cctx->txid, cctx->txform);

    if (o && (ngx_msec_int_t) (now - o->time)
             >= (ngx_msec_int_t) zone->ownership)
    {
        ngx_http_idv_cache_delete(zone, o);
        o = NULL;
    }

    if (o == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);

        if (conf->strict) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idv: TransactionId \"%V\" is not known to "
                          "idv_cache zone \"%V\" (idv_cache_strict), "
                          "refused for tenant \"%V\"", &ctx->transaction_id,
                          &zone->shm_zone->shm.name, &ctx->tenant);
            goto forbidden;
        }

        cctx->status = ngx_http_idv_cache_miss;
        return NGX_DECLINED;
    }

    if (ngx_memcmp(o->tenant, cctx->tenant, sizeof(o->tenant)) != 0) {
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idv: TransactionId \"%V\" belongs to another tenant, "
                      "refused for tenant \"%V\"", &ctx->transaction_id,
                      &ctx->tenant);
        goto forbidden;
    }

    if (conf->results && allowed) {

        if (o->result
            && (ngx_msec_int_t) (o->result->expire - now) > 0
            && ngx_memcmp(o->biz, cctx->biz, sizeof(o->biz)) == 0)
        {
            age = now - o->result->time;

            size = offsetof(ngx_http_idv_cache_result_t, data)
                   + o->result->len;

            res = ngx_palloc(r->pool, size);
            if (res) {
                ngx_memcpy(res, o->result, size);
            }

            ngx_shmtx_unlock(&shpool->mutex);

            if (res == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            cctx->status = ngx_http_idv_cache_hit;

            return ngx_http_idv_cache_send_result(r, ctx, res, age);
        }

        cctx->store = 1;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    cctx->status = ngx_http_idv_cache_miss;

    return NGX_DECLINED;

forbidden:

    cctx->status = ngx_http_idv_cache_forbidden;

    /* one answer for "another tenant's" and "unknown": no oracle */

    return ngx_http_idv_error(r, ctx, NGX_HTTP_FORBIDDEN,
                              "Forbidden.Tenant",
                              "The TransactionId does not belong to this "
                              "tenant");
}


/*
 * Only the plain CheckResult (no images, no extras) is kept: its answer
 * is small and the same for every caller of the same tenant.
 */

static ngx_uint_t
ngx_http_idv_cache_result_allowed(ngx_http_idv_ctx_t *ctx)
{
    size_t                 i;
    ngx_http_idv_param_t  *p;

    if (!(ctx->conf->op->flags & NGX_HTTP_IDV_OP_RESULT)) {
        return 0;
    }

    for (i = 0; i < ctx->req.nparams; i++) {
        p = &ctx->req.params[i];

        if (p->key.len == sizeof("MerchantBizId") - 1
            && ngx_strncmp(p->key.data, "MerchantBizId", p->key.len) == 0)
        {
            continue;
        }

        if (p->key.len == sizeof("TransactionId") - 1
            && ngx_strncmp(p->key.data, "TransactionId", p->key.len) == 0)
        {
            continue;
        }

        if (p->key.len == sizeof("IsReturnImage") - 1
            && ngx_strncmp(p->key.data, "IsReturnImage", p->key.len) == 0
            && p->value.len == 1 && p->value.data[0] == 'N')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* the Initialize answer again, in the API's envelope */

static ngx_int_t
ngx_http_idv_cache_send_data(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_data_t *d, u_char *txid, ngx_uint_t txform,
    ngx_msec_t age)
{
    u_char                *p, *start, *s[NGX_HTTP_IDV_CACHE_NSTRINGS];
    u_char                 hex[32];
    size_t                 size, len[NGX_HTTP_IDV_CACHE_NSTRINGS];
    ngx_uint_t             i;

    p = d->data;

    for (i = 0; i < NGX_HTTP_IDV_CACHE_NSTRINGS; i++) {
        s[i] = p;
        len[i] = d->len[i];
        p += len[i];
    }

    if (txform != NGX_HTTP_IDV_CACHE_TX_DIGEST) {
        ngx_hex_dump(hex, txid, 16);

        if (txform == NGX_HTTP_IDV_CACHE_TX_UPPER) {
            for (i = 0; i < 32; i++) {
                hex[i] = ngx_toupper(hex[i]);
            }
        }

        s[NGX_HTTP_IDV_CACHE_TRANSACTION_ID] = hex;
        len[NGX_HTTP_IDV_CACHE_TRANSACTION_ID] = 32;
        d->present |= 1 << NGX_HTTP_IDV_CACHE_TRANSACTION_ID;
    }

    size = sizeof("{\"Code\":\"Success\",\"Message\":\"success\","
                  "\"Result\":{}}") - 1;

    for (i = 0; i < NGX_HTTP_IDV_CACHE_NSTRINGS; i++) {
        if (d->present & (1 << i)) {
            size += sizeof("\"\":\"\",") - 1
                    + ngx_strlen(ngx_http_idv_cache_names[i])
                    + len[i] + ngx_escape_json(NULL, s[i], len[i]);
        }
    }

    start = ngx_pnalloc(r->pool, size);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(start, "{", 1);

    if (d->present & (1 << NGX_HTTP_IDV_CACHE_REQUEST_ID)) {
        p = ngx_cpymem(p, "\"RequestId\":\"", sizeof("\"RequestId\":\"") - 1);
        ctx->request_id.data = p;
        p = (u_char *) ngx_escape_json(p, s[0], len[0]);
        ctx->request_id.len = p - ctx->request_id.data;
        p = ngx_cpymem(p, "\",", 2);
    }

    p = ngx_cpymem(p, "\"Code\":\"Success\",\"Message\":\"success\","
                      "\"Result\":{",
                   sizeof("\"Code\":\"Success\",\"Message\":\"success\","
                          "\"Result\":{") - 1);

    for (i = NGX_HTTP_IDV_CACHE_TRANSACTION_ID;
         i < NGX_HTTP_IDV_CACHE_NSTRINGS;
         i++)
    {
        if (!(d->present & (1 << i))) {
            continue;
        }

        if (p[-1] != '{') {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "\"%s\":\"", ngx_http_idv_cache_names[i]);

        if (i == NGX_HTTP_IDV_CACHE_TRANSACTION_ID) {
            ctx->transaction_id.data = p;
        }

        p = (u_char *) ngx_escape_json(p, s[i], len[i]);

        if (i == NGX_HTTP_IDV_CACHE_TRANSACTION_ID) {
            ctx->transaction_id.len = p - ctx->transaction_id.data;
        }

        *p++ = '"';
    }

    p = ngx_cpymem(p, "}}", 2);

    ctx->cached = 1;
    ctx->code = ngx_http_idv_cache_success;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: TransactionId \"%V\" again, issued %Mms ago, "
                   "MerchantBizId \"%V\"",
                   &ctx->transaction_id, age, &ctx->merchant_biz_id);

    return ngx_http_idv_reply(r, ctx, NGX_HTTP_OK, start, p, NULL);
}


/* the error of the flight this request waited for */

static ngx_int_t
ngx_http_idv_cache_send_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_error_t *err)
{
    u_char     *code, *message;
    ngx_str_t   one = ngx_string("1");

    code = ngx_pnalloc(r->pool, err->code_len + 1 + err->message_len + 1);
    if (code == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    message = ngx_cpymem(code, err->data, err->code_len);
    *message++ = '\0';

    *ngx_cpymem(message, err->data + err->code_len, err->message_len) = '\0';

    if (err->status == NGX_HTTP_TOO_MANY_REQUESTS
        && ngx_http_idv_set_header(r, "Retry-After", &one, 1) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->cached = 1;

    return ngx_http_idv_error(r, ctx, err->status, (char *) code,
                              (char *) message);
}


static ngx_int_t
ngx_http_idv_cache_send_result(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_result_t *res,
    ngx_msec_t age)
{
    cJSON               *root;
    ngx_pool_cleanup_t  *cln;

    if (ngx_http_idv_cache_age(r, age) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    root = NULL;

    if (ctx->conf->expand_json) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        root = cJSON_ParseWithLength((char *) res->data, res->len);
        if (root == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_idv_cache_json_cleanup;
        cln->data = root;
    }

    ctx->cached = 1;
    ctx->passed = res->passed;
    ctx->code = ngx_http_idv_cache_success;

    return ngx_http_idv_reply(r, ctx, NGX_HTTP_OK, res->data,
                              res->data + res->len, root);
}


static void
ngx_http_idv_cache_json_cleanup(void *data)
{
    cJSON_Delete(data);
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


/* every answer passes here; those of the service are kept */

static ngx_int_t
ngx_http_idv_cache_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    cJSON                     *root;
    ngx_uint_t                 status;
    ngx_http_idv_cache_ctx_t  *cctx;

    cctx = ngx_http_get_module_ctx(r, ngx_http_idv_cache_module);

    if (cctx == NULL) {
        return NGX_DECLINED;
    }

    if (ctx->attempts == 0) {
        /* refused before the call: a flight this request led is free */

        if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {
            ngx_http_idv_cache_release(cctx);
        }

        return NGX_DECLINED;
    }

    root = ctx->answer.upstream ? ctx->answer.json : NULL;
    status = ctx->answer.status;

    if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {

        if (status == NGX_HTTP_OK && root) {
            ngx_http_idv_cache_land(r, ctx, cctx, root);

        } else {
            ngx_http_idv_cache_fail(r, ctx, cctx, root, status);
        }

        cctx->role = 0;
        return NGX_DECLINED;
    }

    if (status != NGX_HTTP_OK || root == NULL) {
        return NGX_DECLINED;
    }

    if (cctx->store) {
        ngx_http_idv_cache_store_result(r, ctx, cctx);

    } else if (cctx->record) {
        ngx_http_idv_cache_record(r, ctx, cctx, root);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_idv_cache_string(cJSON *obj, const char *name, ngx_str_t *s)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(item)) {
        ngx_str_null(s);
        return 0;
    }

    s->data = (u_char *) item->valuestring;
    s->len = ngx_strlen(item->valuestring);

    return 1;
}


/* the flight's answer: the entry becomes READY, waiters get it */

static void
ngx_http_idv_cache_land(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx, cJSON *root)
{
    u_char                      *p, txid[16];
    size_t                       size;
    cJSON                       *result;
    ngx_str_t                    s[NGX_HTTP_IDV_CACHE_NSTRINGS];
    ngx_uint_t                   i, txform, present;
    ngx_msec_t                   now;
    ngx_slab_pool_t             *shpool;
    ngx_http_idv_cache_node_t   *e;
    ngx_http_idv_cache_owner_t  *old;
    ngx_http_idv_cache_data_t   *d;
    ngx_http_idv_cache_zone_t   *zone;

    result = cJSON_GetObjectItemCaseSensitive(root, "Result");

    present = 0;

    present |= ngx_http_idv_cache_string(root, "RequestId",
                                         &s[NGX_HTTP_IDV_CACHE_REQUEST_ID])
               << NGX_HTTP_IDV_CACHE_REQUEST_ID;
    present |= ngx_http_idv_cache_string(result, "TransactionId",
                                         &s[NGX_HTTP_IDV_CACHE_TRANSACTION_ID])
               << NGX_HTTP_IDV_CACHE_TRANSACTION_ID;
    present |= ngx_http_idv_cache_string(result, "TransactionUrl",
                                     &s[NGX_HTTP_IDV_CACHE_TRANSACTION_URL])
               << NGX_HTTP_IDV_CACHE_TRANSACTION_URL;
    present |= ngx_http_idv_cache_string(result, "Protocol",
                                         &s[NGX_HTTP_IDV_CACHE_PROTOCOL])
               << NGX_HTTP_IDV_CACHE_PROTOCOL;
    present |= ngx_http_idv_cache_string(result, "ClientCfg",
                                         &s[NGX_HTTP_IDV_CACHE_CLIENT_CFG])
               << NGX_HTTP_IDV_CACHE_CLIENT_CFG;

    if (s[NGX_HTTP_IDV_CACHE_TRANSACTION_ID].len == 0
        || ngx_http_idv_cache_txid(&s[NGX_HTTP_IDV_CACHE_TRANSACTION_ID],
                                   txid, &txform)
           != NGX_OK)
    {
        /* nothing to give again: the waiters ask for themselves */
        ngx_http_idv_cache_release(cctx);
        return;
    }

    if (txform != NGX_HTTP_IDV_CACHE_TX_DIGEST) {
        /* 16 bytes in the entry say it */
        s[NGX_HTTP_IDV_CACHE_TRANSACTION_ID].len = 0;
        present &= ~(1 << NGX_HTTP_IDV_CACHE_TRANSACTION_ID);
    }

    size = offsetof(ngx_http_idv_cache_data_t, data);

    for (i = 0; i < NGX_HTTP_IDV_CACHE_NSTRINGS; i++) {
        size += s[i].len;
    }

    zone = cctx->zone;
    shpool = zone->shpool;
    now = ngx_current_msec;

    ngx_shmtx_lock(&shpool->mutex);

    e = ngx_http_idv_cache_lookup(zone->sh, cctx->key);

    if (e == NULL) {
        /* given up as abandoned and gone since: start afresh */

        e = ngx_http_idv_cache_new(zone, cctx, r->connection->log);
        if (e == NULL) {
            goto owner_only;
        }

    } else if (e->owner.state != NGX_HTTP_IDV_CACHE_FLIGHT
               || e->flight != cctx->flight)
    {
        /* taken over by another request: its answer will be kept */
        goto owner_only;
    }

    d = ngx_http_idv_cache_alloc(zone, size, &e->owner, r->connection->log);

    if (d == NULL) {
        ngx_http_idv_cache_delete(zone, &e->owner);
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_http_idv_cache_wake(cctx->key);
        ngx_http_idv_cache_record(r, ctx, cctx, root);
        return;
    }

    d->present = present;
    p = d->data;

    for (i = 0; i < NGX_HTTP_IDV_CACHE_NSTRINGS; i++) {
        d->len[i] = s[i].len;
        p = ngx_cpymem(p, s[i].data, s[i].len);
    }

    /* a TransactionId is issued once; an entry that has it is stale */

    old = ngx_http_idv_cache_lookup_tx(zone->sh, txid, txform);
    if (old) {
        ngx_http_idv_cache_delete(zone, old);
    }

    e->data = d;
    e->owner.state = NGX_HTTP_IDV_CACHE_READY;
    e->owner.time = now;

    ngx_http_idv_cache_insert_owner(zone->sh, &e->owner, txid, txform);

    ngx_queue_remove(&e->owner.queue);
    ngx_queue_insert_head(&zone->sh->queue, &e->owner.queue);
    ngx_queue_insert_head(&zone->sh->ready, &e->ready);

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_debug7(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: TransactionId \"%V\" kept: entry %uz bytes "
                   "(slot %uz), answer %uz bytes (slot %uz), then %uz "
                   "bytes (slot %uz)",
                   &ctx->transaction_id, sizeof(ngx_http_idv_cache_node_t),
                   ngx_http_idv_cache_slot(sizeof(ngx_http_idv_cache_node_t)),
                   size, ngx_http_idv_cache_slot(size),
                   sizeof(ngx_http_idv_cache_owner_t),
                   ngx_http_idv_cache_slot(
                                        sizeof(ngx_http_idv_cache_owner_t)));

    ngx_http_idv_cache_wake(cctx->key);

    return;

owner_only:

    /* not kept for retries, but the tenant still owns the transaction */

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_http_idv_cache_record(r, ctx, cctx, root);
}


/*
 * The flight failed: nothing is kept for the key, but the error stays a
 * moment so that the requests that waited for this flight get it too
 * instead of each making a call of its own.
 */

static void
ngx_http_idv_cache_fail(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx, cJSON *root, ngx_uint_t status)
{
    size_t                       size;
    ngx_str_t                    code, message;
    ngx_msec_t                   now;
    ngx_slab_pool_t             *shpool;
    ngx_http_idv_cache_node_t   *e;
    ngx_http_idv_cache_zone_t   *zone;
    ngx_http_idv_cache_error_t  *err;

    if (root == NULL
        || !ngx_http_idv_cache_string(root, "Code", &code)
        || code.len == 0)
    {
        if (status == NGX_HTTP_GATEWAY_TIME_OUT) {
            ngx_str_set(&code, "Gateway.UpstreamTimeout");
            ngx_str_set(&message, "ID Verification did not answer in time");

        } else {
            ngx_str_set(&code, "Gateway.UpstreamError");
            ngx_str_set(&message, "The call to ID Verification failed");
        }

    } else if (!ngx_http_idv_cache_string(root, "Message", &message)) {
        ngx_str_set(&message, "");
    }

    if (status < NGX_HTTP_BAD_REQUEST) {
        status = NGX_HTTP_BAD_GATEWAY;
    }

    zone = cctx->zone;
    shpool = zone->shpool;
    now = ngx_current_msec;

    size = offsetof(ngx_http_idv_cache_error_t, data) + code.len + message.len;

    ngx_shmtx_lock(&shpool->mutex);

    e = ngx_http_idv_cache_lookup(zone->sh, cctx->key);

    if (e == NULL || e->owner.state != NGX_HTTP_IDV_CACHE_FLIGHT
        || e->flight != cctx->flight)
    {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    err = ngx_http_idv_cache_alloc(zone, size, &e->owner,
                                   r->connection->log);

    if (err == NULL) {
        /* the waiters will try again themselves */
        ngx_http_idv_cache_delete(zone, &e->owner);

    } else {
        err->status = (uint32_t) status;
        err->code_len = (uint32_t) code.len;
        err->message_len = (uint32_t) message.len;
        ngx_memcpy(ngx_cpymem(err->data, code.data, code.len),
                   message.data, message.len);

        e->data = err;
        e->owner.state = NGX_HTTP_IDV_CACHE_FAILED;
        e->owner.time = now;

        ngx_queue_remove(&e->owner.queue);
        ngx_queue_insert_head(&zone->sh->queue, &e->owner.queue);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv cache: flight %uL failed with HTTP %ui, "
                   "MerchantBizId \"%V\" not kept",
                   cctx->flight, status, &ctx->merchant_biz_id);

    ngx_http_idv_cache_wake(cctx->key);
}


/* a final CheckResult answer (Passed Y/N, T/F), never a pending one */

static void
ngx_http_idv_cache_store_result(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cache_ctx_t *cctx)
{
    size_t                        len;
    ngx_msec_t                    now;
    ngx_slab_pool_t              *shpool;
    ngx_http_idv_cache_owner_t   *o;
    ngx_http_idv_cache_zone_t    *zone;
    ngx_http_idv_cache_conf_t    *conf;
    ngx_http_idv_cache_result_t  *res;

    if (ctx->passed == NGX_HTTP_IDV_PASSED_UNKNOWN || ctx->response == NULL) {
        return;
    }

    len = ctx->response->last - ctx->response->pos;

    if (len > NGX_HTTP_IDV_CACHE_RESULT_MAX) {
        return;
    }

    conf = ngx_http_get_module_loc_conf(r, ngx_http_idv_cache_module);

    zone = cctx->zone;
    shpool = zone->shpool;
    now = ngx_current_msec;

    ngx_shmtx_lock(&shpool->mutex);

    o = ngx_http_idv_cache_lookup_tx(zone->sh, cctx->txid, cctx->txform);

    if (o == NULL
        || ngx_memcmp(o->tenant, cctx->tenant, sizeof(o->tenant)) != 0
        || ngx_memcmp(o->biz, cctx->biz, sizeof(o->biz)) != 0)
    {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    ngx_http_idv_cache_drop_result(zone, o);

    res = ngx_http_idv_cache_alloc(zone,
                                   offsetof(ngx_http_idv_cache_result_t, data)
                                   + len,
                                   o, r->connection->log);
    if (res) {
        res->owner = o;
        res->time = now;
        res->expire = now + conf->results;
        res->len = (uint32_t) len;
        res->passed = (uint8_t) ctx->passed;
        ngx_memcpy(res->data, ctx->response->pos, len);

        o->result = res;
        ngx_queue_insert_head(&zone->sh->results, &res->queue);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * An answer with a TransactionId to a request that did not name one
 * (EkycVerify, an Initialize that bypassed the cache): the tenant that
 * asked owns it.
 */

static void
ngx_http_idv_cache_record(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cache_ctx_t *cctx, cJSON *root)
{
    u_char                      txid[16];
    ngx_str_t                   id;
    ngx_uint_t                  txform;
    ngx_slab_pool_t             *shpool;
    ngx_http_idv_cache_zone_t   *zone;
    ngx_http_idv_cache_owner_t  *o;

    if (!ngx_http_idv_cache_string(
             cJSON_GetObjectItemCaseSensitive(root, "Result"),
             "TransactionId", &id)
        || id.len == 0)
    {
        return;
    }

    if (ngx_http_idv_cache_txid(&id, txid, &txform) != NGX_OK) {
        return;
    }

    zone = cctx->zone;
    shpool = zone->shpool;

    ngx_shmtx_lock(&shpool->mutex);

    if (ngx_http_idv_cache_lookup_tx(zone->sh, txid, txform) == NULL) {

        o = ngx_http_idv_cache_alloc(zone, sizeof(ngx_http_idv_cache_owner_t),
                                     NULL, r->connection->log);
        if (o) {
            ngx_memzero(o, sizeof(ngx_http_idv_cache_owner_t));

            o->state = NGX_HTTP_IDV_CACHE_OWNER;
            o->time = ngx_current_msec;
            ngx_memcpy(o->tenant, cctx->tenant, sizeof(o->tenant));
            ngx_memcpy(o->biz, cctx->biz, sizeof(o->biz));

            ngx_http_idv_cache_insert_owner(zone->sh, o, txid, txform);
            ngx_queue_insert_head(&zone->sh->queue, &o->queue);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * The request goes away: a flight that has not landed is released (the
 * client closed, the gateway failed before the call), a waiter stops.
 */

static void
ngx_http_idv_cache_cleanup(void *data)
{
    ngx_http_idv_cache_ctx_t  *cctx = data;

    if (cctx->role == NGX_HTTP_IDV_CACHE_LEADER) {
        ngx_http_idv_cache_release(cctx);

    } else {
        ngx_http_idv_cache_unwait(cctx);
    }
}


/* the flight ends without an answer to keep: one of its waiters leads */

static void
ngx_http_idv_cache_release(ngx_http_idv_cache_ctx_t *cctx)
{
    ngx_slab_pool_t            *shpool;
    ngx_http_idv_cache_node_t  *e;

    cctx->role = 0;

    shpool = cctx->zone->shpool;

    ngx_shmtx_lock(&shpool->mutex);

    e = ngx_http_idv_cache_lookup(cctx->zone->sh, cctx->key);

    if (e && e->owner.state == NGX_HTTP_IDV_CACHE_FLIGHT
        && e->flight == cctx->flight)
    {
        ngx_http_idv_cache_delete(cctx->zone, &e->owner);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "idv cache: flight %uL released without an answer",
                   cctx->flight);

    ngx_http_idv_cache_wake(cctx->key);
}


static void
ngx_http_idv_cache_poll_handler(ngx_event_t *ev)
{
    ngx_http_idv_resume(ev->data);
}


/* waiters in this worker look again now rather than at their next poll */

static void
ngx_http_idv_cache_wake(u_char *key)
{
    ngx_queue_t               *q;
    ngx_http_idv_cache_ctx_t  *w;

    for (q = ngx_queue_head(&ngx_http_idv_cache_waiters);
         q != ngx_queue_sentinel(&ngx_http_idv_cache_waiters);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_idv_cache_ctx_t, waiting);

        if (ngx_memcmp(w->key, key, sizeof(w->key)) != 0) {
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


/* shared memory: the caller holds the zone's mutex */

#define ngx_http_idv_cache_key_node(n)                                       \
    ((ngx_http_idv_cache_node_t *)                                           \
         ((u_char *) (n) - offsetof(ngx_http_idv_cache_node_t, node)))


static ngx_http_idv_cache_node_t *
ngx_http_idv_cache_lookup(ngx_http_idv_cache_shctx_t *sh, u_char *key)
{
    ngx_int_t                   rc;
    ngx_rbtree_key_t            k;
    ngx_rbtree_node_t          *node, *sentinel;
    ngx_http_idv_cache_node_t  *e;

    ngx_memcpy(&k, key, sizeof(ngx_rbtree_key_t));

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (k != node->key) {
            node = (k < node->key) ? node->left : node->right;
            continue;
        }

        e = ngx_http_idv_cache_key_node(node);

        rc = ngx_memcmp(key, e->key, sizeof(e->key));

        if (rc == 0) {
            return e;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_int_t
ngx_http_idv_cache_tx_cmp(u_char *txid, ngx_uint_t txform,
    ngx_http_idv_cache_owner_t *o)
{
    ngx_int_t  rc;

    rc = ngx_memcmp(txid, o->txid, sizeof(o->txid));

    if (rc == 0) {
        rc = (ngx_int_t) txform - (ngx_int_t) o->txform;
    }

    return rc;
}


static ngx_http_idv_cache_owner_t *
ngx_http_idv_cache_lookup_tx(ngx_http_idv_cache_shctx_t *sh, u_char *txid,
    ngx_uint_t txform)
{
    ngx_int_t                    rc;
    ngx_rbtree_key_t             k;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_idv_cache_owner_t  *o;

    ngx_memcpy(&k, txid, sizeof(ngx_rbtree_key_t));

    node = sh->txtree.root;
    sentinel = sh->txtree.sentinel;

    while (node != sentinel) {

        if (k != node->key) {
            node = (k < node->key) ? node->left : node->right;
            continue;
        }

        o = (ngx_http_idv_cache_owner_t *) node;

        rc = ngx_http_idv_cache_tx_cmp(txid, txform, o);

        if (rc == 0) {
            return o;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_idv_cache_insert_key(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t          **p;
    ngx_http_idv_cache_node_t   *e, *t;

    e = ngx_http_idv_cache_key_node(node);

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            t = ngx_http_idv_cache_key_node(temp);

            p = (ngx_memcmp(e->key, t->key, sizeof(e->key)) < 0)
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


static void
ngx_http_idv_cache_insert_tx(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_idv_cache_owner_t   *o;

    o = (ngx_http_idv_cache_owner_t *) node;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            p = (ngx_http_idv_cache_tx_cmp(o->txid, o->txform,
                                          (ngx_http_idv_cache_owner_t *) temp)
                 < 0)
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


static void
ngx_http_idv_cache_insert_owner(ngx_http_idv_cache_shctx_t *sh,
    ngx_http_idv_cache_owner_t *o, u_char *txid, ngx_uint_t txform)
{
    ngx_memcpy(o->txid, txid, sizeof(o->txid));
    o->txform = (uint8_t) txform;
    ngx_memcpy(&o->tx.key, txid, sizeof(ngx_rbtree_key_t));

    ngx_rbtree_insert(&sh->txtree, &o->tx);
}


/* a new flight for the request's key */

static ngx_http_idv_cache_node_t *
ngx_http_idv_cache_new(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_ctx_t *cctx, ngx_log_t *log)
{
    ngx_http_idv_cache_node_t  *e;

    e = ngx_http_idv_cache_alloc(zone, sizeof(ngx_http_idv_cache_node_t),
                                 NULL, log);
    if (e == NULL) {
        return NULL;
    }

    ngx_memzero(e, sizeof(ngx_http_idv_cache_node_t));

    e->owner.state = NGX_HTTP_IDV_CACHE_FLIGHT;
    e->owner.time = ngx_current_msec;
    ngx_memcpy(e->owner.tenant, cctx->tenant, sizeof(e->owner.tenant));
    ngx_memcpy(e->owner.biz, cctx->biz, sizeof(e->owner.biz));

    e->flight = ++zone->sh->flights;
    e->pid = ngx_pid;
    ngx_memcpy(e->key, cctx->key, sizeof(e->key));
    ngx_memcpy(e->digest, cctx->digest, sizeof(e->digest));
    ngx_memcpy(&e->node.key, cctx->key, sizeof(ngx_rbtree_key_t));

    ngx_rbtree_insert(&zone->sh->rbtree, &e->node);
    ngx_queue_insert_head(&zone->sh->queue, &e->owner.queue);

    return e;
}


/* an abandoned or failed flight becomes the request's own */

static void
ngx_http_idv_cache_take(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_node_t *e, ngx_http_idv_cache_ctx_t *cctx)
{
    if (e->data) {
        ngx_slab_free_locked(zone->shpool, e->data);
        e->data = NULL;
    }

    e->owner.state = NGX_HTTP_IDV_CACHE_FLIGHT;
    e->owner.time = ngx_current_msec;
    e->flight = ++zone->sh->flights;
    e->pid = ngx_pid;
    ngx_memcpy(e->digest, cctx->digest, sizeof(e->digest));

    ngx_queue_remove(&e->owner.queue);
    ngx_queue_insert_head(&zone->sh->queue, &e->owner.queue);
}


static ngx_uint_t
ngx_http_idv_cache_abandoned(ngx_http_idv_cache_node_t *e, ngx_msec_t now)
{
    if ((ngx_msec_int_t) (now - e->owner.time) >= NGX_HTTP_IDV_CACHE_ABANDONED)
    {
        return 1;
    }

    /* a worker that crashed or was killed runs no cleanup */

    if (e->pid != ngx_pid && kill(e->pid, 0) == -1 && ngx_errno == NGX_ESRCH)
    {
        return 1;
    }

    return 0;
}


/*
 * When the zone is full the oldest entries go, one by one, until the
 * allocation fits: a full zone costs idempotency for old transactions,
 * never a request.  Reported once a minute at most.
 */

static void *
ngx_http_idv_cache_alloc(ngx_http_idv_cache_zone_t *zone, size_t size,
    ngx_http_idv_cache_owner_t *keep, ngx_log_t *log)
{
    void                        *p;
    ngx_msec_t                   now;
    ngx_uint_t                   n;
    ngx_queue_t                 *q;
    ngx_http_idv_cache_owner_t  *o;
    ngx_http_idv_cache_shctx_t  *sh;

    sh = zone->sh;
    n = 0;
    o = NULL;

    for ( ;; ) {
        p = ngx_slab_alloc_locked(zone->shpool, size);

        if (p) {
            break;
        }

        for (q = ngx_queue_last(&sh->queue);
             q != ngx_queue_sentinel(&sh->queue);
             q = ngx_queue_prev(q))
        {
            o = ngx_queue_data(q, ngx_http_idv_cache_owner_t, queue);

            if (o != keep) {
                break;
            }
        }

        if (q == ngx_queue_sentinel(&sh->queue)) {
            break;
        }

        ngx_http_idv_cache_delete(zone, o);
        n++;
    }

    if (n == 0) {
        return p;
    }

    sh->evicted += n;
    now = ngx_current_msec;

    if ((ngx_msec_int_t) (now - sh->report) >= 0) {

        if (sh->report == 0) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "idv_cache zone \"%V\" is full: evicting the "
                          "oldest entries (reported once a minute); a "
                          "larger zone keeps retries idempotent for the "
                          "whole ttl", &zone->shm_zone->shm.name);

        } else {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "idv_cache zone \"%V\" is full: %ui entries "
                          "evicted since the last report; a larger zone "
                          "keeps retries idempotent for the whole ttl",
                          &zone->shm_zone->shm.name, sh->evicted);
        }

        sh->report = now + NGX_HTTP_IDV_CACHE_REPORT;
        sh->evicted = 0;
    }

    if (p == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "idv_cache zone \"%V\" cannot hold %uz bytes even "
                      "when empty", &zone->shm_zone->shm.name, size);
    }

    return p;
}


/*
 * A few expired entries per lookup: READY ones past ttl shrink to their
 * owner record, entries past their lifetime go, and so do CheckResult
 * answers past idv_cache_results.
 */

static void
ngx_http_idv_cache_expire(ngx_http_idv_cache_zone_t *zone, ngx_msec_t now,
    ngx_log_t *log)
{
    ngx_uint_t                    n;
    ngx_msec_t                    life;
    ngx_queue_t                  *q;
    ngx_http_idv_cache_node_t    *e;
    ngx_http_idv_cache_owner_t   *o;
    ngx_http_idv_cache_shctx_t   *sh;
    ngx_http_idv_cache_result_t  *res;

    sh = zone->sh;

    for (n = 0; n < NGX_HTTP_IDV_CACHE_SWEEP; n++) {

        if (ngx_queue_empty(&sh->ready)) {
            break;
        }

        q = ngx_queue_last(&sh->ready);
        e = ngx_queue_data(q, ngx_http_idv_cache_node_t, ready);

        if ((ngx_msec_int_t) (now - e->owner.time)
            < (ngx_msec_int_t) zone->ttl)
        {
            break;
        }

        ngx_http_idv_cache_demote(zone, e, log);
    }

    for (n = 0; n < NGX_HTTP_IDV_CACHE_SWEEP; n++) {

        if (ngx_queue_empty(&sh->queue)) {
            break;
        }

        q = ngx_queue_last(&sh->queue);
        o = ngx_queue_data(q, ngx_http_idv_cache_owner_t, queue);

        switch (o->state) {
        case NGX_HTTP_IDV_CACHE_FLIGHT:
            life = NGX_HTTP_IDV_CACHE_ABANDONED;
            break;
        case NGX_HTTP_IDV_CACHE_FAILED:
            life = NGX_HTTP_IDV_CACHE_FAILED_KEEP;
            break;
        default:
            life = zone->ownership;
        }

        if ((ngx_msec_int_t) (now - o->time) < (ngx_msec_int_t) life) {
            break;
        }

        ngx_http_idv_cache_delete(zone, o);
    }

    for (n = 0; n < NGX_HTTP_IDV_CACHE_SWEEP; n++) {

        if (ngx_queue_empty(&sh->results)) {
            break;
        }

        q = ngx_queue_last(&sh->results);
        res = ngx_queue_data(q, ngx_http_idv_cache_result_t, queue);

        if ((ngx_msec_int_t) (res->expire - now) > 0) {
            break;
        }

        ngx_http_idv_cache_drop_result(zone, res->owner);
    }
}


/*
 * READY -> OWNER: past ttl the key is free again and the entry shrinks
 * to its owner record, in the same place of the queue.
 */

static void
ngx_http_idv_cache_demote(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_node_t *e, ngx_log_t *log)
{
    ngx_http_idv_cache_owner_t  *o;

    ngx_rbtree_delete(&zone->sh->rbtree, &e->node);
    ngx_queue_remove(&e->ready);

    ngx_slab_free_locked(zone->shpool, e->data);
    e->data = NULL;

    e->owner.state = NGX_HTTP_IDV_CACHE_OWNER;

    o = ngx_http_idv_cache_alloc(zone, sizeof(ngx_http_idv_cache_owner_t),
                                 &e->owner, log);
    if (o == NULL) {
        /* not even that fits: keep the larger one */
        return;
    }

    ngx_memcpy(o, &e->owner, sizeof(ngx_http_idv_cache_owner_t));

    ngx_rbtree_delete(&zone->sh->txtree, &e->owner.tx);
    ngx_rbtree_insert(&zone->sh->txtree, &o->tx);

    ngx_queue_insert_after(&e->owner.queue, &o->queue);
    ngx_queue_remove(&e->owner.queue);

    if (o->result) {
        o->result->owner = o;
    }

    ngx_slab_free_locked(zone->shpool, e);
}


static void
ngx_http_idv_cache_drop_result(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_owner_t *o)
{
    if (o->result == NULL) {
        return;
    }

    ngx_queue_remove(&o->result->queue);
    ngx_slab_free_locked(zone->shpool, o->result);
    o->result = NULL;
}


/* an owner record, or a whole entry (an OWNER may be either) */

static void
ngx_http_idv_cache_delete(ngx_http_idv_cache_zone_t *zone,
    ngx_http_idv_cache_owner_t *o)
{
    ngx_http_idv_cache_node_t  *e;

    if (o->state != NGX_HTTP_IDV_CACHE_OWNER) {
        e = (ngx_http_idv_cache_node_t *) o;

        ngx_rbtree_delete(&zone->sh->rbtree, &e->node);

        if (o->state == NGX_HTTP_IDV_CACHE_READY) {
            ngx_queue_remove(&e->ready);
        }

        if (e->data) {
            ngx_slab_free_locked(zone->shpool, e->data);
        }
    }

    if (o->txform) {
        ngx_rbtree_delete(&zone->sh->txtree, &o->tx);
    }

    ngx_queue_remove(&o->queue);

    ngx_http_idv_cache_drop_result(zone, o);

    ngx_slab_free_locked(zone->shpool, o);
}


static size_t
ngx_http_idv_cache_data_size(ngx_http_idv_cache_data_t *d)
{
    size_t      size;
    ngx_uint_t  i;

    size = offsetof(ngx_http_idv_cache_data_t, data);

    for (i = 0; i < NGX_HTTP_IDV_CACHE_NSTRINGS; i++) {
        size += d->len[i];
    }

    return size;
}


/* what the slab allocator really takes for an allocation of this size */

static size_t
ngx_http_idv_cache_slot(size_t size)
{
    size_t  slot;

    if (size > ngx_pagesize / 2) {
        return (size + ngx_pagesize - 1) / ngx_pagesize * ngx_pagesize;
    }

    for (slot = 8; slot < size; slot <<= 1) { /* void */ }

    return slot;
}


/*
 * A TransactionId in 16 bytes: 32 hex digits (what the API issues) as
 * their value, anything else as a digest.
 */

static ngx_int_t
ngx_http_idv_cache_txid(ngx_str_t *id, u_char *out, ngx_uint_t *form)
{
    u_char      c, d;
    ngx_uint_t  i, lower, upper;

    if (id->len == 32) {
        lower = 1;
        upper = 1;

        for (i = 0; i < 32; i++) {
            c = id->data[i];

            if (c >= '0' && c <= '9') {
                continue;
            }

            if (c >= 'a' && c <= 'f') {
                upper = 0;

            } else if (c >= 'A' && c <= 'F') {
                lower = 0;

            } else {
                lower = 0;
                upper = 0;
                break;
            }
        }

        if (lower || upper) {
            for (i = 0; i < 16; i++) {
                c = id->data[2 * i];
                d = id->data[2 * i + 1];

                c = (c <= '9') ? c - '0' : (u_char) ((c | 0x20) - 'a' + 10);
                d = (d <= '9') ? d - '0' : (u_char) ((d | 0x20) - 'a' + 10);

                out[i] = (u_char) (c << 4 | d);
            }

            *form = lower ? NGX_HTTP_IDV_CACHE_TX_LOWER
                          : NGX_HTTP_IDV_CACHE_TX_UPPER;
            return NGX_OK;
        }
    }

    *form = NGX_HTTP_IDV_CACHE_TX_DIGEST;

    return ngx_http_idv_cache_hash("txid", id, 1, out, 16);
}


static ngx_int_t
ngx_http_idv_cache_hash(const char *domain, ngx_str_t *parts, ngx_uint_t n,
    u_char *out, size_t len)
{
    ngx_uint_t  i;

    if (ngx_http_idv_cache_hash_begin(domain) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ngx_http_idv_cache_hash_add(parts[i].data, parts[i].len);
    }

    return ngx_http_idv_cache_hash_end(out, len);
}


static ngx_int_t
ngx_http_idv_cache_hash_begin(const char *domain)
{
    if (ngx_http_idv_cache_md == NULL) {
        ngx_http_idv_cache_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        ngx_http_idv_cache_md_ctx = EVP_MD_CTX_new();

        if (ngx_http_idv_cache_md == NULL
            || ngx_http_idv_cache_md_ctx == NULL)
        {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "idv cache: cannot load SHA-256 from OpenSSL");
            ngx_http_idv_cache_exit(NULL);
            return NGX_ERROR;
        }
    }

    ngx_http_idv_cache_md_error = 0;

    if (EVP_DigestInit_ex2(ngx_http_idv_cache_md_ctx, ngx_http_idv_cache_md,
                           NULL)
        != 1)
    {
        return NGX_ERROR;
    }

    ngx_http_idv_cache_hash_add((u_char *) domain, ngx_strlen(domain));

    return NGX_OK;
}


/* length-prefixed, so that no two sequences of parts hash alike */

static void
ngx_http_idv_cache_hash_add(u_char *data, size_t len)
{
    u_char  prefix[4];

    prefix[0] = (u_char) (len >> 24);
    prefix[1] = (u_char) (len >> 16);
    prefix[2] = (u_char) (len >> 8);
    prefix[3] = (u_char) len;

    if (EVP_DigestUpdate(ngx_http_idv_cache_md_ctx, prefix, 4) != 1
        || (len && EVP_DigestUpdate(ngx_http_idv_cache_md_ctx, data, len)
                   != 1))
    {
        ngx_http_idv_cache_md_error = 1;
    }
}


static ngx_int_t
ngx_http_idv_cache_hash_end(u_char *out, size_t len)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;

    if (EVP_DigestFinal_ex(ngx_http_idv_cache_md_ctx, md, &n) != 1
        || ngx_http_idv_cache_md_error
        || n < len)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(out, md, len);

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
                                 ngx_http_idv_cache_stage)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_ANSWER,
                                    ngx_http_idv_cache_answer);
}


static void *
ngx_http_idv_cache_create_conf(ngx_conf_t *cf)
{
    ngx_http_idv_cache_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cache_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->zone = NGX_CONF_UNSET_PTR;
    conf->strict = NGX_CONF_UNSET;
    conf->results = NGX_CONF_UNSET_MSEC;
    conf->wait = NGX_CONF_UNSET_MSEC;

    return conf;
}


static char *
ngx_http_idv_cache_merge_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_cache_conf_t *prev = parent;
    ngx_http_idv_cache_conf_t *conf = child;

    ngx_uint_t                off;
    ngx_http_idv_loc_conf_t  *lcf;

    off = (conf->zone == NULL);     /* "idv_cache off" here */

    ngx_conf_merge_ptr_value(conf->zone, prev->zone, NULL);
    ngx_conf_merge_value(conf->strict, prev->strict, 0);
    ngx_conf_merge_msec_value(conf->results, prev->results, 0);
    ngx_conf_merge_msec_value(conf->wait, prev->wait, 10000);

    if (conf->zone && conf->zone->data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_cache %V\" names no zone: declare it with "
                           "\"idv_cache_zone zone=%V:SIZE\" in http",
                           &conf->zone->shm.name, &conf->zone->shm.name);
        return NGX_CONF_ERROR;
    }

    lcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (lcf->op && conf->zone == NULL && !off
        && (conf->strict || conf->results))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" in a location with \"idv_action %V\" "
                           "needs \"idv_cache\"",
                           conf->strict ? "idv_cache_strict"
                                        : "idv_cache_results",
                           ngx_http_idv_ngx_str(&lcf->op->name));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_cache_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                     *p;
    ssize_t                     size;
    ngx_str_t                  *value, name, s;
    ngx_int_t                   t;
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_shm_zone_t             *shm_zone, *old;
    ngx_http_idv_cache_zone_t  *zone;

    value = cf->args->elts;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cache_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->ttl = NGX_HTTP_IDV_CACHE_TTL;
    zone->ownership = NGX_CONF_UNSET_MSEC;

    size = 0;
    ngx_str_null(&name);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {

            name.data = value[i].data + 5;

            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\", expected "
                                   "\"zone=NAME:SIZE\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            name.len = p - name.data;

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR || name.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\", expected "
                                   "\"zone=NAME:SIZE\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" is too small, the minimum "
                                   "is %uzk", &value[i],
                                   8 * ngx_pagesize / 1024);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {

            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            t = ngx_parse_time(&s, 0);

            if (t == NGX_ERROR || t < 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\", expected a time of at "
                                   "least 1s", &value[i]);
                return NGX_CONF_ERROR;
            }

            zone->ttl = (ngx_msec_t) t;
            continue;
        }

        if (ngx_strncmp(value[i].data, "ownership=", 10) == 0) {

            s.data = value[i].data + 10;
            s.len = value[i].len - 10;

            t = ngx_parse_time(&s, 0);

            if (t == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"%V\", expected a time",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            zone->ownership = (ngx_msec_t) t;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", expected \"zone=\", "
                           "\"ttl=\" or \"ownership=\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone=NAME:SIZE\" "
                           "parameter", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (zone->ownership == NGX_CONF_UNSET_MSEC) {
        zone->ownership = ngx_max(zone->ttl, NGX_HTTP_IDV_CACHE_OWNERSHIP);

    } else if (zone->ownership < zone->ttl) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ownership=\" of idv_cache zone \"%V\" is "
                           "shorter than its \"ttl=\"", &name);
        return NGX_CONF_ERROR;
    }

    /*
     * nginx would silently start a resized zone empty; refuse instead, so
     * that a reload never forgets which retries were already billed.
     */

    old = NULL;

    if (!ngx_is_init_cycle(cf->cycle->old_cycle)) {
        part = &cf->cycle->old_cycle->shared_memory.part;
        shm_zone = part->elts;

        for (i = 0; /* void */ ; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }
                part = part->next;
                shm_zone = part->elts;
                i = 0;
            }

            if (shm_zone[i].tag == &ngx_http_idv_cache_module
                && shm_zone[i].shm.name.len == name.len
                && ngx_strncmp(shm_zone[i].shm.name.data, name.data,
                               name.len) == 0)
            {
                old = &shm_zone[i];
                break;
            }
        }
    }

    if (old && old->shm.size != (size_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv_cache zone \"%V\" cannot change its size "
                           "from %uz to %uz on reload: its entries would be "
                           "lost and retried Initialize calls billed again; "
                           "keep the size, or restart nginx (or rename the "
                           "zone) to start an empty cache",
                           &name, old->shm.size, (size_t) size);
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_idv_cache_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv_cache zone \"%V\" is already declared",
                           &name);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = shm_zone;

    shm_zone->init = ngx_http_idv_cache_init_zone;
    shm_zone->data = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cache_conf_t *ccf = conf;

    ngx_str_t  *value;

    if (ccf->zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ccf->zone = NULL;
        return NGX_CONF_OK;
    }

    ccf->zone = ngx_shared_memory_add(cf, &value[1], 0,
                                      &ngx_http_idv_cache_module);
    if (ccf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

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
ngx_http_idv_cache_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_cache_zone_t  *ozone = data;

    size_t                      len;
    ngx_http_idv_cache_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* reload: the same memory, the entries as they were */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_idv_cache_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_idv_cache_insert_key);
    ngx_rbtree_init(&zone->sh->txtree, &zone->sh->txsentinel,
                    ngx_http_idv_cache_insert_tx);

    ngx_queue_init(&zone->sh->queue);
    ngx_queue_init(&zone->sh->ready);
    ngx_queue_init(&zone->sh->results);

    zone->sh->flights = 0;
    zone->sh->report = 0;
    zone->sh->evicted = 0;

    len = sizeof(" in idv_cache zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in idv_cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone evicts: that is not worth a [crit] */
    zone->shpool->log_nomem = 0;

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "idv_cache zone \"%V\": %uz bytes; a transaction takes "
                  "%uz bytes and its Initialize answer while ttl lasts, "
                  "then %uz bytes while ownership lasts",
                  &shm_zone->shm.name, shm_zone->shm.size,
                  ngx_http_idv_cache_slot(sizeof(ngx_http_idv_cache_node_t)),
                  ngx_http_idv_cache_slot(sizeof(ngx_http_idv_cache_owner_t)));

    return NGX_OK;
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
    EVP_MD_CTX_free(ngx_http_idv_cache_md_ctx);
    EVP_MD_free(ngx_http_idv_cache_md);

    ngx_http_idv_cache_md_ctx = NULL;
    ngx_http_idv_cache_md = NULL;
}
