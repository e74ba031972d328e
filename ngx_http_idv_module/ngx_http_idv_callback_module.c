
/*
 * ngx_http_idv_module: verified result callbacks.
 *
 * Initialize gets a CallbackUrl and a CallbackToken the gateway can verify
 * later without shared state.  When the service calls back, the token is
 * checked in constant time, the result is not taken from the URL but
 * fetched with CheckResult, and the verified result goes to the backend as
 * a JSON POST (idv_callback_pass) exactly once, or is kept for CheckResult
 * to answer from.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_conf_file.h"
#include "ngx_http_idv_metrics.h"
#include "ngx_http_idv_store.h"
#include "ngx_http_idv_tenancy.h"
#include "ngx_http_idv_token.h"

#include <cjson/cJSON.h>


#define NGX_HTTP_IDV_CB_KEY_MAX      2
#define NGX_HTTP_IDV_CB_KEY_FILE_MAX 4096

/* replay-guard states of a transaction */
#define NGX_HTTP_IDV_CB_INFLIGHT     1
#define NGX_HTTP_IDV_CB_DELIVERED    2

/* how long an in-flight mark protects a transaction from a second run */
#define NGX_HTTP_IDV_CB_INFLIGHT_TTL 60

/*
 * The zone's keys: a TransactionId (letters, digits, '-' and '_') for its
 * replay guard, kept until its ttl.  Results kept for CheckResult live
 * with their owner in the tenancy zone.
 */


typedef struct {
    u_char                      kid[4];
    ngx_str_t                   key;
} ngx_http_idv_cb_key_t;


typedef struct {
    ngx_http_idv_store_t       *store;
    time_t                      ttl;
} ngx_http_idv_cb_main_conf_t;


typedef struct {
    ngx_str_t                   url;
    ngx_array_t                *keys;           /* ngx_http_idv_cb_key_t */
    ngx_str_t                   pass;
    time_t                      token_ttl;
    ngx_uint_t                  log_level;
    ngx_flag_t                  handler;
} ngx_http_idv_cb_loc_conf_t;


/* a callback request's steps */
#define NGX_HTTP_IDV_CB_START        0
#define NGX_HTTP_IDV_CB_MARKING      1
#define NGX_HTTP_IDV_CB_CONFIRMING   2
#define NGX_HTTP_IDV_CB_FORWARDING   3
#define NGX_HTTP_IDV_CB_FINISHING    4


/* a callback request's own state */
typedef struct {
    ngx_str_t                   transaction_id;
    ngx_str_t                   result;         /* the JSON sent on */
    ngx_str_t                   mark;           /* the in-flight guard */
    ngx_http_idv_store_batch_t  batch;
    ngx_http_idv_store_op_t     op;
    ngx_uint_t                  step;
    unsigned                    marked:1;
    unsigned                    finished:1;
} ngx_http_idv_cb_ctx_t;


static ngx_int_t ngx_http_idv_cb_prepare(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cb_state(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cb_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_cb_reject(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t event, const char *reason);
static ngx_int_t ngx_http_idv_cb_confirmed(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_cb_result(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cb_ctx_t *cb);
static ngx_int_t ngx_http_idv_cb_forwarded(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cb_ctx_t *cb,
    ngx_http_idv_cb_main_conf_t *cmcf);
static ngx_int_t ngx_http_idv_cb_finish(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_cb_ctx_t *cb,
    ngx_http_idv_cb_main_conf_t *cmcf);
static ngx_int_t ngx_http_idv_cb_ack(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, const char *message);
static void ngx_http_idv_cb_release(void *data);
static ngx_int_t ngx_http_idv_cb_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
static ngx_int_t ngx_http_idv_cb_guard(ngx_pool_t *pool, ngx_uint_t state,
    ngx_str_t *tenant, ngx_str_t *value);


static void *ngx_http_idv_cb_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_idv_cb_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idv_cb_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_cb_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_cb_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_cb_key_parse(ngx_http_idv_conf_file_t *file,
    void *data);
static char *ngx_http_idv_cb(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_idv_cb_init(ngx_conf_t *cf);


static ngx_conf_enum_t  ngx_http_idv_cb_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_idv_cb_commands[] = {

    { ngx_string("idv_callback_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_cb_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_callback_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cb_loc_conf_t, url),
      NULL },

    { ngx_string("idv_callback_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_idv_cb_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_callback_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cb_loc_conf_t, token_ttl),
      NULL },

    { ngx_string("idv_callback"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idv_cb,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_callback_pass"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cb_loc_conf_t, pass),
      NULL },

    { ngx_string("idv_callback_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_cb_loc_conf_t, log_level),
      &ngx_http_idv_cb_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_callback_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_idv_cb_init,                  /* postconfiguration */

    ngx_http_idv_cb_create_main_conf,      /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idv_cb_create_loc_conf,       /* create location configuration */
    ngx_http_idv_cb_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_idv_callback_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_callback_module_ctx,     /* module context */
    ngx_http_idv_cb_commands,              /* module directives */
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


static ngx_str_t  ngx_http_idv_cb_json_type = ngx_string("application/json");
static ngx_str_t  ngx_http_idv_cb_retry = ngx_string("5");

/* the documented KDF input: key = HMAC-SHA256(secret, this label) */
static u_char     ngx_http_idv_cb_kdf_label[] =
    "ngx_http_idv_module callback token v1";


/* Initialize: add CallbackUrl and a fresh CallbackToken */

static ngx_int_t
ngx_http_idv_cb_prepare(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    u_char                      *token;
    size_t                       len;
    ngx_http_idv_param_t        *p;
    ngx_http_idv_token_t         t;
    ngx_http_idv_cb_key_t       *key;
    ngx_http_idv_cb_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_callback_module);

    if (lcf->url.len == 0
        || ngx_http_idv_op_param(ctx->conf->op, (u_char *) "CallbackToken",
                                 13) == NULL)
    {
        return NGX_OK;
    }

    if (ctx->attempts == 0
        && (ngx_http_idv_req_get(&ctx->req, "CallbackUrl")
            || ngx_http_idv_req_get(&ctx->req, "CallbackToken")))
    {
        return ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                  "InvalidParameter",
                                  "CallbackUrl and CallbackToken are set by "
                                  "the gateway for this location");
    }

    p = ngx_http_idv_req_get(&ctx->req, "MerchantBizId");
    key = lcf->keys->elts;

    ngx_memzero(&t, sizeof(ngx_http_idv_token_t));

    ngx_memcpy(t.kid, key[0].kid, 4);
    t.expire = (uint32_t) (ngx_time() + lcf->token_ttl);
    t.tenant.data = ctx->tenant.data;
    t.tenant.len = ctx->tenant.len;
    t.product = ctx->req.product;
    t.merchant_biz_id.data = p ? p->value.data : NULL;
    t.merchant_biz_id.len = p ? p->value.len : 0;

    token = ngx_pnalloc(r->pool, NGX_HTTP_IDV_TOKEN_MAX);
    if (token == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_http_idv_token_encode(token, &t, key[0].key.data,
                                    key[0].key.len);
    if (len == 0) {
        return ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                  "InvalidParameter",
                                  "The tenant, product code and "
                                  "MerchantBizId must each be shorter than "
                                  "256 bytes");
    }

    if (ngx_http_idv_req_set(&ctx->req, "CallbackUrl", lcf->url.data,
                             lcf->url.len) != 0
        || ngx_http_idv_req_set(&ctx->req, "CallbackToken", token, len) != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/*
 * STATE: a backend's CheckResult may be answered from the result a
 * callback kept (ngx_http_idv_tenancy_module keeps it); a callback's own
 * confirmation first marks its transaction in flight, or finds it
 * delivered or in flight already (the replay guard, keyed by
 * TransactionId, kept until it expires).
 */

static ngx_int_t
ngx_http_idv_cb_state(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                     rc;
    ngx_pool_cleanup_t           *cln;
    ngx_http_idv_cb_ctx_t        *cb;
    ngx_http_idv_store_op_t      *op;
    ngx_http_idv_cb_main_conf_t  *cmcf;

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_callback_module);

    cb = ngx_http_get_module_ctx(r, ngx_http_idv_callback_module);

    if (cb == NULL) {
        if (cmcf->store && (ctx->conf->op->flags & NGX_HTTP_IDV_OP_RESULT)) {
            ctx->kept_result = 1;
        }

        return NGX_DECLINED;
    }

    /* the authoritative result, never one kept */
    ctx->kept_result = 0;

    if (cb->batch.pending) {
        return NGX_AGAIN;
    }

    op = &cb->op;

    switch (cb->step) {

    case NGX_HTTP_IDV_CB_START:

        if (ngx_http_idv_cb_guard(r->pool, NGX_HTTP_IDV_CB_INFLIGHT,
                                  &ctx->tenant, &cb->mark)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_memzero(op, sizeof(ngx_http_idv_store_op_t));

        op->store = cmcf->store;
        op->op = NGX_HTTP_IDV_STORE_ADD;
        op->key = cb->transaction_id;
        op->value = cb->mark;
        op->ttl = NGX_HTTP_IDV_CB_INFLIGHT_TTL * 1000;
        op->keep = 1;

        cb->step = NGX_HTTP_IDV_CB_MARKING;

        if (ngx_http_idv_state_call(r, &cb->batch) == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        /* fall through */

    case NGX_HTTP_IDV_CB_MARKING:

        cb->step = NGX_HTTP_IDV_CB_CONFIRMING;
        rc = cb->batch.rc;

        if (rc != NGX_OK) {
            cb->finished = 1;
            return ngx_http_idv_state_error(r, ctx, cmcf->store, rc);
        }

        if (op->rc == NGX_DECLINED) {
            cb->finished = 1;

            if (op->result.len
                && op->result.data[0] == NGX_HTTP_IDV_CB_DELIVERED)
            {
                ngx_http_idv_metrics_event(r, NGX_HTTP_IDV_M_CB_DUPLICATE);
                return ngx_http_idv_cb_ack(r, ctx, "already delivered");
            }

            if (ngx_http_idv_set_header(r, "Retry-After",
                                        &ngx_http_idv_cb_retry, 0)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            return ngx_http_idv_error(r, ctx, NGX_HTTP_CONFLICT,
                                      "Callback.InProgress",
                                      "This transaction's callback is being "
                                      "processed; retry later");
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_idv_cb_release;
        cln->data = r;

        cb->marked = 1;

        return NGX_DECLINED;

    default:
        return NGX_DECLINED;
    }
}


/* the callback itself: GET ?callbackToken=&transactionId=&passed=&subCode= */

static ngx_int_t
ngx_http_idv_cb_handler(ngx_http_request_t *r)
{
    u_char                        raw[NGX_HTTP_IDV_TOKEN_RAW_MAX];
    ngx_int_t                     rc;
    ngx_str_t                     token, tx;
    ngx_uint_t                    i, found;
    ngx_http_idv_ctx_t           *ctx;
    ngx_http_idv_cb_ctx_t        *cb;
    ngx_http_idv_cb_key_t        *key;
    ngx_http_idv_token_t          t;
    ngx_http_idv_param_t         *params;
    ngx_http_idv_cb_loc_conf_t   *lcf;
    ngx_http_idv_cb_main_conf_t  *cmcf;

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;
    }

    ctx = ngx_http_idv_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* error lines show the request line: not with the token */
    ngx_http_idv_log_mask(r);

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        (void) ngx_http_idv_error(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                  "Gateway.MethodNotAllowed",
                                  "Result callbacks are GET requests");
        return ngx_http_idv_run(r, ctx);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_callback_module);
    cmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_callback_module);

    if (ngx_http_idv_cb_arg(r, "callbackToken", &token) != NGX_OK
        || ngx_http_idv_cb_arg(r, "transactionId", &tx) != NGX_OK)
    {
        (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_MALFORMED,
                                          "no token or transactionId");
        return ngx_http_idv_run(r, ctx);
    }

    for (i = 0; i < tx.len; i++) {
        if (!((tx.data[i] >= '0' && tx.data[i] <= '9')
              || ((tx.data[i] | 0x20) >= 'a' && (tx.data[i] | 0x20) <= 'z')
              || tx.data[i] == '-' || tx.data[i] == '_'))
        {
            (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_MALFORMED,
                                          "malformed transactionId");
        return ngx_http_idv_run(r, ctx);
        }
    }

    if (tx.len == 0 || tx.len > 64) {
        (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_MALFORMED,
                                          "malformed transactionId");
        return ngx_http_idv_run(r, ctx);
    }

    ngx_memzero(&t, sizeof(ngx_http_idv_token_t));

    if (ngx_http_idv_token_decode(token.data, token.len, raw, &t) != 0) {
        (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_MALFORMED,
                                          "malformed token");
        return ngx_http_idv_run(r, ctx);
    }

    /* the key the token names: the current one or the one rotated out */

    key = lcf->keys->elts;
    found = 0;

    for (i = 0; i < lcf->keys->nelts; i++) {
        if (ngx_memcmp(key[i].kid, t.kid, 4) == 0
            && ngx_http_idv_token_verify(&t, key[i].key.data,
                                         key[i].key.len))
        {
            found = 1;
            break;
        }
    }

    if (!found) {
        (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_FORGED,
                                          "forged token or unknown key");
        return ngx_http_idv_run(r, ctx);
    }

    if ((time_t) t.expire < ngx_time()) {
        (void) ngx_http_idv_cb_reject(r, ctx, NGX_HTTP_IDV_M_CB_EXPIRED,
                                          "expired token");
        return ngx_http_idv_run(r, ctx);
    }

    ngx_http_idv_metrics_event(r, NGX_HTTP_IDV_M_CB_VERIFIED);

    /* what the token binds is the request's now */

    ctx->tenant.len = t.tenant.len;
    ctx->tenant.data = ngx_pstrdup(r->pool, (ngx_str_t *) &t.tenant);
    ctx->merchant_biz_id.len = t.merchant_biz_id.len;
    ctx->merchant_biz_id.data = ngx_pstrdup(r->pool,
                                            (ngx_str_t *) &t.merchant_biz_id);
    ctx->transaction_id = tx;

    if ((t.tenant.len && ctx->tenant.data == NULL)
        || (t.merchant_biz_id.len && ctx->merchant_biz_id.data == NULL))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cb = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_cb_ctx_t));
    if (cb == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, cb, ngx_http_idv_callback_module);
    cb->transaction_id = tx;
    cb->batch.ops = &cb->op;
    cb->batch.nops = 1;

    /*
     * Without idv_callback_pass the verified result is kept for the
     * backend's CheckResult (with the transaction's owner) and the
     * service told it was delivered.  That a valid token belongs to this
     * transaction is said by the owner record, else by CheckResult: it is
     * called with the token's MerchantBizId.
     */

    if (lcf->pass.len == 0) {
        ctx->keep_result = (ngx_msec_t) cmcf->ttl * 1000;
    }

    /* the authoritative result: CheckResult with the bound MerchantBizId */

    params = ngx_palloc(r->pool, 2 * sizeof(ngx_http_idv_param_t));
    if (params == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(params, 2 * sizeof(ngx_http_idv_param_t));

    params[0].key.data = (u_char *) "MerchantBizId";
    params[0].key.len = 13;
    params[0].value.data = ctx->merchant_biz_id.data;
    params[0].value.len = ctx->merchant_biz_id.len;
    params[1].key.data = (u_char *) "TransactionId";
    params[1].key.len = 13;
    params[1].value.data = tx.data;
    params[1].value.len = tx.len;

    ctx->req.op = ctx->conf->op;
    ctx->req.params = params;
    ctx->req.nparams = 2;
    ctx->phase = NGX_HTTP_IDV_PHASE_CHECK;
    ctx->index = 0;

    r->main->count++;

    rc = ngx_http_idv_run(r, ctx);

    if (rc == NGX_DONE) {
        return NGX_DONE;
    }

    r->main->count--;

    return rc;
}


static ngx_int_t
ngx_http_idv_cb_reject(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t event, const char *reason)
{
    ngx_http_idv_cb_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_callback_module);

    ngx_http_idv_metrics_event(r, event);

    /* the reason, never the token */

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "idv: callback rejected: %s", reason);

    return ngx_http_idv_error(r, ctx, NGX_HTTP_FORBIDDEN,
                              "Callback.InvalidToken",
                              "The callback token is not valid for this "
                              "transaction");
}


/*
 * DELIVER: CheckResult answered the callback's confirmation: the
 * verified result goes to the backend (idv_callback_pass) or was kept
 * (ANSWER), the transaction is marked delivered, the service is told.
 */

static ngx_int_t
ngx_http_idv_cb_confirmed(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_str_t                     empty = ngx_null_string;
    ngx_http_request_t           *sr;
    ngx_http_idv_cb_ctx_t        *cb;
    ngx_http_idv_cb_loc_conf_t   *lcf;
    ngx_http_idv_cb_main_conf_t  *cmcf;

    cb = ngx_http_get_module_ctx(r, ngx_http_idv_callback_module);

    if (cb == NULL || cb->finished) {
        /* not a callback, or answered already */
        return NGX_DECLINED;
    }

    if (cb->batch.pending) {
        return NGX_AGAIN;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_callback_module);
    cmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_callback_module);

    switch (cb->step) {

    case NGX_HTTP_IDV_CB_CONFIRMING:

        if (ctx->attempts == 0) {
            /* refused before the call (another tenant's transaction) */
            cb->finished = 1;
            return NGX_DECLINED;
        }

        if (ngx_http_idv_answer_json(r, ctx) == NULL
            || ctx->answer.status != NGX_HTTP_OK)
        {

            cb->finished = 1;

            if (ctx->code.len == 16
                && ngx_strncmp(ctx->code.data, "InvalidParameter", 16) == 0)
            {
                /* the service says the MerchantBizId is not this one's */
                return ngx_http_idv_cb_reject(r, ctx,
                                              NGX_HTTP_IDV_M_CB_FOREIGN,
                                              "token of another "
                                              "transaction");
            }

            ngx_http_idv_metrics_event(r, NGX_HTTP_IDV_M_CB_UNCONFIRMED);

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idv: callback for TransactionId \"%V\": "
                          "CheckResult failed (HTTP %ui, code \"%V\")",
                          &cb->transaction_id, ctx->answer.status,
                          &ctx->code);

            return ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_GATEWAY,
                                      "Gateway.UpstreamError",
                                      "The result could not be confirmed; "
                                      "retry later");
        }

        if (lcf->pass.len == 0) {
            return ngx_http_idv_cb_finish(r, ctx, cb, cmcf);
        }

        if (ngx_http_idv_cb_result(r, ctx, cb) != NGX_OK) {
            return NGX_ERROR;
        }

        sr = ngx_http_idv_subrequest(r, ctx, &lcf->pass, &empty, &cb->result,
                                     &ngx_http_idv_cb_json_type);
        if (sr == NULL) {
            return NGX_ERROR;
        }

        cb->step = NGX_HTTP_IDV_CB_FORWARDING;

        return NGX_AGAIN;

    case NGX_HTTP_IDV_CB_FORWARDING:
        return ngx_http_idv_cb_forwarded(r, ctx, cb, cmcf);

    case NGX_HTTP_IDV_CB_FINISHING:

        cb->finished = 1;
        cb->marked = 0;

        ngx_http_idv_metrics_event(r, lcf->pass.len
                                      ? NGX_HTTP_IDV_M_CB_FORWARDED
                                      : NGX_HTTP_IDV_M_CB_KEPT);

        if (cb->batch.rc != NGX_OK) {
            /* the backend has it: a 5xx now would only deliver it twice */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idv: callback for TransactionId \"%V\" delivered "
                          "but not recorded: the callback zone \"%V\" is "
                          "full or unavailable", &cb->transaction_id,
                          &cmcf->store->name);
        }

        return ngx_http_idv_cb_ack(r, ctx, "delivered");

    default:
        return NGX_DECLINED;
    }
}


/* what the backend gets: the bound fields and the verified result */

static ngx_int_t
ngx_http_idv_cb_result(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cb_ctx_t *cb)
{
    char    *printed;
    cJSON   *result, *out, *item;
    size_t   len;

    result = cJSON_GetObjectItemCaseSensitive(
                 ngx_http_idv_answer_json(r, ctx), "Result");

    /* the bound fields are not NUL-terminated: copied for cJSON */

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NGX_ERROR;
    }

#define ngx_http_idv_cb_add(name, s)                                          \
    do {                                                                      \
        u_char  *z_ = ngx_pnalloc(r->pool, (s)->len + 1);                     \
        if (z_ == NULL) {                                                     \
            cJSON_Delete(out);                                                \
            return NGX_ERROR;                                                 \
        }                                                                     \
        ngx_memcpy(z_, (s)->data, (s)->len);                                  \
        z_[(s)->len] = '\0';                                                  \
        cJSON_AddStringToObject(out, name, (char *) z_);                      \
    } while (0)

    ngx_http_idv_cb_add("Tenant", &ctx->tenant);
    ngx_http_idv_cb_add("MerchantBizId", &ctx->merchant_biz_id);
    ngx_http_idv_cb_add("TransactionId", &cb->transaction_id);

#undef ngx_http_idv_cb_add

    /* Passed, SubCode and the Ext* fields, as CheckResult gave them */

    if (cJSON_IsObject(result)) {
        for (item = result->child; item; item = item->next) {
            if (item->string
                && (ngx_strcmp(item->string, "Passed") == 0
                    || ngx_strcmp(item->string, "SubCode") == 0
                    || ngx_strncmp(item->string, "Ext", 3) == 0))
            {
                cJSON_AddItemToObject(out, item->string,
                                      cJSON_Duplicate(item, 1));
            }
        }
    }

    printed = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);

    if (printed == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(printed);

    cb->result.data = ngx_pnalloc(r->pool, len);
    if (cb->result.data == NULL) {
        cJSON_free(printed);
        return NGX_ERROR;
    }

    ngx_memcpy(cb->result.data, printed, len);
    cb->result.len = len;
    cJSON_free(printed);

    return NGX_OK;
}


/* the backend has answered the forwarded result */

static ngx_int_t
ngx_http_idv_cb_forwarded(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cb_ctx_t *cb, ngx_http_idv_cb_main_conf_t *cmcf)
{
    if (!ctx->done) {
        return NGX_AGAIN;
    }

    /* the backend's 2xx is what counts, not how long its answer was */

    if ((!ctx->failed || ctx->too_large) && ctx->upstream_status >= 200
        && ctx->upstream_status < 300)
    {
        return ngx_http_idv_cb_finish(r, ctx, cb, cmcf);
    }

    cb->finished = 1;

    ngx_http_idv_metrics_event(r, NGX_HTTP_IDV_M_CB_BACKEND_ERROR);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "idv: callback for TransactionId \"%V\": the backend "
                  "answered HTTP %ui; the caller will retry",
                  &ctx->transaction_id, ctx->upstream_status);

    return ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_GATEWAY,
                              "Callback.BackendError",
                              "The backend did not accept the result; retry "
                              "later");
}


/* delivered: the replay guard says so, kept until the zone's ttl */

static ngx_int_t
ngx_http_idv_cb_finish(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_cb_ctx_t *cb, ngx_http_idv_cb_main_conf_t *cmcf)
{
    ngx_http_idv_store_op_t  *op;

    op = &cb->op;

    ngx_memzero(op, sizeof(ngx_http_idv_store_op_t));

    op->store = cmcf->store;
    op->op = NGX_HTTP_IDV_STORE_SET;
    op->key = cb->transaction_id;
    op->ttl = (ngx_msec_t) cmcf->ttl * 1000;
    op->keep = 1;

    if (ngx_http_idv_cb_guard(r->pool, NGX_HTTP_IDV_CB_DELIVERED,
                              &ctx->tenant, &op->value)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cb->step = NGX_HTTP_IDV_CB_FINISHING;

    if (ngx_http_idv_state_call(r, &cb->batch) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_cb_confirmed(r, ctx);
}

static ngx_int_t
ngx_http_idv_cb_ack(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    const char *message)
{
    u_char  *body;
    size_t   len;

    len = sizeof("{\"Code\":\"Success\",\"Message\":\"\"}") - 1
          + ngx_strlen(message);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(body, "{\"Code\":\"Success\",\"Message\":\"%s\"}", message);

    return ngx_http_idv_reply(r, ctx, NGX_HTTP_OK, body, body + len, NULL);
}


/* a callback that did not complete leaves its transaction open again */

static void
ngx_http_idv_cb_release(void *data)
{
    ngx_http_request_t  *r = data;

    ngx_http_idv_cb_ctx_t        *cb;
    ngx_http_idv_store_op_t       op;
    ngx_http_idv_cb_main_conf_t  *cmcf;

    cb = ngx_http_get_module_ctx(r, ngx_http_idv_callback_module);

    if (cb == NULL || !cb->marked) {
        return;
    }

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_callback_module);

    /*
     * only this callback's own mark, never a delivered transaction's;
     * the request is gone: nothing waits for the outcome
     */

    ngx_memzero(&op, sizeof(ngx_http_idv_store_op_t));

    op.store = cmcf->store;
    op.op = NGX_HTTP_IDV_STORE_DELETE;
    op.key = cb->transaction_id;
    op.expect = cb->mark;

    ngx_http_idv_state_forget(r, &op);

    cb->marked = 0;
}


static ngx_int_t
ngx_http_idv_cb_arg(ngx_http_request_t *r, char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    value->data = ngx_pnalloc(r->pool, raw.len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    dst = value->data;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, NGX_UNESCAPE_URI);

    value->len = dst - value->data;

    return NGX_OK;
}


/* a replay guard's value: state, tenant length (1), tenant */

static ngx_int_t
ngx_http_idv_cb_guard(ngx_pool_t *pool, ngx_uint_t state, ngx_str_t *tenant,
    ngx_str_t *value)
{
    u_char  *p;

    value->len = 2 + tenant->len;
    value->data = ngx_pnalloc(pool, value->len);

    if (value->data == NULL) {
        return NGX_ERROR;
    }

    p = value->data;
    *p++ = (u_char) state;
    *p++ = (u_char) tenant->len;
    ngx_memcpy(p, tenant->data, tenant->len);

    return NGX_OK;
}


static void *
ngx_http_idv_cb_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cb_main_conf_t));
}


static void *
ngx_http_idv_cb_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idv_cb_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_cb_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->keys = NGX_CONF_UNSET_PTR;
    conf->token_ttl = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;
    conf->handler = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_idv_cb_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_cb_loc_conf_t *prev = parent;
    ngx_http_idv_cb_loc_conf_t *conf = child;

    u_char                       *key;
    ngx_http_idv_cb_key_t        *k;
    ngx_http_idv_loc_conf_t      *ilcf;
    ngx_http_idv_cb_main_conf_t  *cmcf;

    ngx_conf_merge_str_value(conf->url, prev->url, "");
    ngx_conf_merge_ptr_value(conf->keys, prev->keys, NULL);
    ngx_conf_merge_str_value(conf->pass, prev->pass, "");
    ngx_conf_merge_sec_value(conf->token_ttl, prev->token_ttl, 86400);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_WARN);
    ngx_conf_merge_value(conf->handler, prev->handler, 0);

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (conf->url.len == 0 && !conf->handler) {
        return NGX_CONF_OK;
    }

    if (conf->url.len
        && ngx_strncasecmp(conf->url.data, (u_char *) "https://", 8) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_callback_url\" must be an https:// "
                           "URL: the service calls only https callbacks",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    if (conf->handler) {
        cmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_idv_callback_module);
        if (cmcf->store == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V: \"idv_callback\" needs "
                               "\"idv_callback_zone\" in the http block (the "
                               "replay guard)", ngx_http_idv_conf_where(cf));
            return NGX_CONF_ERROR;
        }

    if (conf->handler && conf->pass.len == 0
        && !ngx_http_idv_tenancy_configured(cf))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_callback\" without "
                           "\"idv_callback_pass\" keeps results for "
                           "CheckResult and needs \"idv_tenancy_zone "
                           "zone=NAME:SIZE\" in the http block: results are "
                           "kept with their owner",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }
    }

    if (conf->keys) {
        return NGX_CONF_OK;
    }

    /* no key file: derive the key from the AccessKey secret */

    if (ilcf->access_key_secret.len == 0) {
        if (conf->url.len && ilcf->op == NULL && !conf->handler) {
            /* inherited by locations that do not call the API */
            return NGX_CONF_OK;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: callbacks need a key: set "
                           "\"idv_callback_key\" or credentials to derive it "
                           "from", ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    conf->keys = ngx_array_create(cf->pool, 1, sizeof(ngx_http_idv_cb_key_t));
    if (conf->keys == NULL) {
        return NGX_CONF_ERROR;
    }

    k = ngx_array_push(conf->keys);
    key = ngx_pnalloc(cf->pool, 32);

    if (k == NULL || key == NULL
        || ngx_http_idv_hmac_sha256(ilcf->access_key_secret.data,
                                    ilcf->access_key_secret.len,
                                    ngx_http_idv_cb_kdf_label,
                                    sizeof(ngx_http_idv_cb_kdf_label) - 1,
                                    key)
           != 0
        || ngx_http_idv_token_kid(key, 32, k->kid) != 0)
    {
        return NGX_CONF_ERROR;
    }

    k->key.data = key;
    k->key.len = 32;

    return NGX_CONF_OK;
}


/* idv_callback_zone zone=NAME:SIZE [ttl=TIME]; */

static char *
ngx_http_idv_cb_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cb_main_conf_t *cmcf = conf;

    ngx_msec_t  ttl;

    if (cmcf->store) {
        return "is duplicate";
    }

    ttl = 7 * 86400 * 1000;

    cmcf->store = ngx_http_idv_store_zone(cf, "callback",
                                          &ngx_http_idv_callback_module,
                                          &ttl);
    if (cmcf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    cmcf->ttl = (time_t) (ttl / 1000);

    return NGX_CONF_OK;
}


/* idv_callback_key FILE [PREVIOUS_FILE]: the first signs, both verify */

static char *
ngx_http_idv_cb_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cb_loc_conf_t *lcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (lcf->keys != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lcf->keys = ngx_array_create(cf->pool, NGX_HTTP_IDV_CB_KEY_MAX,
                                 sizeof(ngx_http_idv_cb_key_t));
    if (lcf->keys == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        if (ngx_http_idv_conf_file_parse(cf, "idv_callback_key", &value[i],
                                         NGX_HTTP_IDV_CB_KEY_FILE_MAX,
                                         ngx_http_idv_cb_key_parse, lcf->keys)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* the key is the file's bytes, but for a line end and trailing blanks */

static ngx_int_t
ngx_http_idv_cb_key_parse(ngx_http_idv_conf_file_t *file, void *data)
{
    ngx_array_t *keys = data;

    u_char                 *end;
    ngx_http_idv_cb_key_t  *k;

    end = file->end;

    while (end > file->start
           && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
    {
        end--;
    }

    if (end - file->start < 32) {
        ngx_http_idv_conf_file_error(file, 0, "holds fewer than 32 bytes; "
                                     "use e.g. \"openssl rand -hex 32\"");
        return NGX_ERROR;
    }

    k = ngx_array_push(keys);
    if (k == NULL) {
        return NGX_ERROR;
    }

    k->key.len = end - file->start;
    k->key.data = ngx_pnalloc(file->cf->pool, k->key.len);
    if (k->key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(k->key.data, file->start, k->key.len);

    if (ngx_http_idv_token_kid(k->key.data, k->key.len, k->kid) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_idv_cb(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_cb_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_idv_loc_conf_t   *ilcf;

    if (lcf->handler != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->handler = 1;

    /* the location confirms results with CheckResult */

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (ilcf->op) {
        return "cannot be combined with \"idv_action\"";
    }

    ilcf->op = ngx_http_idv_op_find((u_char *) "CheckResult", 11);

    if (ngx_http_idv_conf_where_set(cf, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_idv_cb_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_cb_init(ngx_conf_t *cf)
{
    if (ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_STATE,
                                 ngx_http_idv_cb_state)
        != NGX_OK
        || ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_PREPARE,
                                    ngx_http_idv_cb_prepare)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_DELIVER,
                                    ngx_http_idv_cb_confirmed);
}
