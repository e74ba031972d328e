
/*
 * ngx_http_idv_module: an endpoint for the official SDKs.
 *
 * A backend that already calls the service through an Alibaba Cloud SDK
 * points the SDK's endpoint here and signs with a key the gateway issued
 * (idv_tenant_keys).  The request is verified as the service would verify
 * it (signature, timestamp window, nonce), then becomes an ordinary
 * corridor run for the key's tenant: validation, limits, cache,
 * callbacks and metrics apply, the call is re-signed with the master
 * credentials, and the service's answer goes back unchanged.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_conf_file.h"
#include "ngx_http_idv_credentials.h"
#include "ngx_http_idv_metrics.h"
#include "ngx_http_idv_store.h"
#include "ngx_http_idv_verify.h"


#define NGX_HTTP_IDV_SDK_FILE_MAX     (1024 * 1024)
#define NGX_HTTP_IDV_SDK_SECRET_MIN   16
#define NGX_HTTP_IDV_SDK_NAME_MAX     128
#define NGX_HTTP_IDV_SDK_FORM         "application/x-www-form-urlencoded"


#define ngx_http_idv_sdk_alnum(c)                                            \
    (((c) >= '0' && (c) <= '9') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= 'a' && (c) <= 'z'))


typedef struct {
    ngx_str_t                   id;             /* AccessKeyId */
    ngx_str_t                   secret;
    ngx_str_t                   tenant;
    u_char                     *allowed;        /* per operation, or NULL */
    ngx_uint_t                  line;
} ngx_http_idv_sdk_key_t;


typedef struct {
    ngx_http_idv_store_t       *store;          /* the nonces */
} ngx_http_idv_sdk_main_conf_t;


typedef struct {
    ngx_array_t                *keys;           /* sorted by id */
    ngx_flag_t                  gateway;        /* a location has one */
} ngx_http_idv_sdk_srv_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_uint_t                  log_level;
} ngx_http_idv_sdk_loc_conf_t;


/* a verified SDK request: its nonce, used up in the CHECK phase */
typedef struct {
    ngx_str_t                   key_id;
    ngx_http_idv_store_batch_t  batch;
    ngx_http_idv_store_op_t     op;
    unsigned                    sent:1;
    unsigned                    checked:1;
} ngx_http_idv_sdk_ctx_t;


static ngx_int_t ngx_http_idv_sdk_post_read(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_sdk_mask(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_sdk_handler(ngx_http_request_t *r);
static void ngx_http_idv_sdk_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_sdk_process(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_sdk_headers(ngx_http_request_t *r,
    ngx_http_idv_verify_t *v);
static ngx_http_idv_sdk_key_t *ngx_http_idv_sdk_find_key(ngx_array_t *keys,
    ngx_str_t *id);
static ngx_int_t ngx_http_idv_sdk_nonce(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_sdk_nonce_key(ngx_http_request_t *r,
    ngx_http_idv_verify_t *v, ngx_http_idv_sdk_key_t *key);
static ngx_int_t ngx_http_idv_sdk_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, const char *code,
    ngx_str_t *message, ngx_str_t *key_id);
static ngx_int_t ngx_http_idv_sdk_call(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_verify_t *v);
static ngx_int_t ngx_http_idv_sdk_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, ngx_str_t *message,
    ngx_str_t *key_id);
static ngx_int_t ngx_http_idv_sdk_verify_error(ngx_http_request_t *r,
    ngx_http_idv_verify_t *v);

static void *ngx_http_idv_sdk_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_idv_sdk_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_idv_sdk_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static void *ngx_http_idv_sdk_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idv_sdk_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_sdk_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_sdk_keys(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_sdk_keys_parse(ngx_http_idv_conf_file_t *file,
    void *data);
static ngx_int_t ngx_http_idv_sdk_key_cmp(const void *one, const void *two);
static char *ngx_http_idv_sdk_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_sdk_init(ngx_conf_t *cf);


static ngx_conf_enum_t  ngx_http_idv_sdk_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_idv_sdk_commands[] = {

    { ngx_string("idv_sdk_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_sdk_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_tenant_keys"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_sdk_keys,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_sdk_gateway"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idv_sdk_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_sdk_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_sdk_loc_conf_t, log_level),
      &ngx_http_idv_sdk_log_levels },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_sdk_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_idv_sdk_init,                 /* postconfiguration */

    ngx_http_idv_sdk_create_main_conf,     /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_idv_sdk_create_srv_conf,      /* create server configuration */
    ngx_http_idv_sdk_merge_srv_conf,       /* merge server configuration */

    ngx_http_idv_sdk_create_loc_conf,      /* create location configuration */
    ngx_http_idv_sdk_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_idv_sdk_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_sdk_module_ctx,          /* module context */
    ngx_http_idv_sdk_commands,             /* module directives */
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



/*
 * nginx's own error log handler, for a request whose module contexts an
 * internal redirect (error_page) has cleared: it is the same function
 * for every request
 */


static ngx_str_t  ngx_http_idv_sdk_version =
    ngx_string(NGX_HTTP_IDV_API_VERSION);


/*
 * The SDKs put API parameters, identity data among them, in the query
 * string: in a server with an SDK gateway, error lines show the request
 * line without it, from the start (nginx refuses a body over
 * client_max_body_size, with a log line, before any content handler).
 */

static ngx_int_t
ngx_http_idv_sdk_post_read(ngx_http_request_t *r)
{
    ngx_http_idv_sdk_srv_conf_t  *sscf;

    sscf = ngx_http_get_module_srv_conf(r, ngx_http_idv_sdk_module);

    if (sscf->gateway && r == r->main
        && ngx_http_idv_sdk_mask(r) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_idv_sdk_mask(ngx_http_request_t *r)
{
    /* the module's own masking: request line and upstream URL */

    ngx_http_idv_log_mask(r);

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_sdk_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;
    ngx_str_t  msg;

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (ngx_http_idv_sdk_mask(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(r->method & (NGX_HTTP_POST|NGX_HTTP_GET))) {

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_str_set(&msg, "This http method is not supported.");

        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                       "UnsupportedHTTPMethod", &msg, NULL);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_idv_sdk_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_idv_sdk_body_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_idv_sdk_process(r);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The checks in the service's order: the key, the timestamp, the
 * signature, the nonce (only a verified request uses one up), the
 * version and the action; then the tenant's own list of actions.
 */

static ngx_int_t
ngx_http_idv_sdk_process(ngx_http_request_t *r)
{
    u_char                        *q;
    ngx_int_t                      rc;
    ngx_str_t                      body, msg, *ct;
    ngx_http_idv_ctx_t            *ctx;
    ngx_http_idv_verify_t          v;
    ngx_http_idv_sdk_key_t        *key;
    ngx_http_idv_loc_conf_t       *ilcf, *conf;
    const ngx_http_idv_op_t       *op;
    ngx_http_idv_sdk_srv_conf_t   *sscf;

    sscf = ngx_http_get_module_srv_conf(r, ngx_http_idv_sdk_module);

    rc = ngx_http_idv_read_body(r, &body);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_memzero(&v, sizeof(ngx_http_idv_verify_t));

    v.method = *(ngx_http_idv_str_t *) &r->method_name;
    v.query.data = r->args.data;
    v.query.len = r->args.len;
    v.body.data = body.data;
    v.body.len = body.len;
    v.alloc = ngx_http_idv_palloc;
    v.alloc_data = r->pool;

    /* the path as sent: the SDKs sign "/" */

    v.path.data = r->unparsed_uri.data;
    v.path.len = r->unparsed_uri.len;

    q = ngx_strlchr(v.path.data, v.path.data + v.path.len, '?');
    if (q) {
        v.path.len = q - v.path.data;
    }

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    v.form = (ct && ct->len >= sizeof(NGX_HTTP_IDV_SDK_FORM) - 1
              && ngx_strncasecmp(ct->data, (u_char *) NGX_HTTP_IDV_SDK_FORM,
                                 sizeof(NGX_HTTP_IDV_SDK_FORM) - 1)
                 == 0);

    if (body.len && !v.form) {
        ngx_str_set(&msg, "The request body must be "
                          "application/x-www-form-urlencoded.");
        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "InvalidParameter", &msg, NULL);
    }

    rc = ngx_http_idv_sdk_headers(r, &v);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_idv_verify_parse(&v) != 0) {
        return ngx_http_idv_sdk_verify_error(r, &v);
    }

    /*
     * The corridor's context as soon as the action is known, so that the
     * log variables and metrics see refused requests too; the tenant is
     * set only once the signature proved it.  The operation is per
     * request: this location's configuration is copied with it.
     */

    op = ngx_http_idv_op_find(v.action.data, v.action.len);
    ctx = NULL;

    if (op) {
        ctx = ngx_http_idv_get_ctx(r);
        conf = ngx_palloc(r->pool, sizeof(ngx_http_idv_loc_conf_t));

        if (ctx == NULL || conf == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_module);

        /* the location's idv_product_code, if any, holds here too */

        *conf = *ilcf;
        conf->op = op;

        ctx->conf = conf;
    }

    key = ngx_http_idv_sdk_find_key(sscf->keys,
                                    ngx_http_idv_ngx_str(&v.access_key_id));
    if (key == NULL) {
        ngx_str_set(&msg, "Specified access key is not found.");
        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_NOT_FOUND,
                                       "InvalidAccessKeyId.NotFound", &msg,
                                       ngx_http_idv_ngx_str(&v.access_key_id));
    }

    if (ngx_http_idv_verify_time(&v, ngx_time(), NGX_HTTP_IDV_VERIFY_WINDOW)
        != 0
        || ngx_http_idv_verify_signature(&v, key->secret.data,
                                         key->secret.len)
           != 0)
    {
        return ngx_http_idv_sdk_verify_error(r, &v);
    }

    /* the nonce is used up in the CHECK phase, once nothing else refuses */

    if (ngx_http_idv_sdk_nonce_key(r, &v, key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* verified: the key's tenant is the request's from here on */

    if (ctx) {
        ctx->tenant = key->tenant;
    }

    if (v.version.len != ngx_http_idv_sdk_version.len
        || ngx_memcmp(v.version.data, ngx_http_idv_sdk_version.data,
                      v.version.len) != 0)
    {
        ngx_str_set(&msg, "Specified parameter Version is not valid.");
        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_BAD_REQUEST,
                                       "InvalidVersion", &msg,
                                       &key->id);
    }

    if (op == NULL) {
        /* it may be newer than the gateway's operations table */
        ngx_str_set(&msg, "The gateway does not know this action: it may be "
                          "newer than the gateway's operations table.");
        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_NOT_FOUND,
                                       "InvalidAction.NotFound", &msg,
                                       &key->id);
    }

    if (key->allowed && !key->allowed[op - ngx_http_idv_ops]) {
        ngx_str_set(&msg, "The AccessKey is not allowed to call this "
                          "action.");
        return ngx_http_idv_sdk_refuse(r, NGX_HTTP_FORBIDDEN,
                                       "Forbidden.Action", &msg, &key->id);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv: SDK request verified, AccessKeyId \"%V\", "
                   "tenant \"%V\"", &key->id, &key->tenant);

    return ngx_http_idv_sdk_call(r, ctx, &v);
}


/* the request's headers for the verifier: lower-case names, values */

static ngx_int_t
ngx_http_idv_sdk_headers(ngx_http_request_t *r, ngx_http_idv_verify_t *v)
{
    ngx_uint_t              i, n;
    ngx_list_part_t        *part;
    ngx_table_elt_t        *h;
    ngx_http_idv_header_t  *out;

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    out = ngx_palloc(r->pool, (n ? n : 1) * sizeof(ngx_http_idv_header_t));
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].hash == 0) {
                continue;
            }

            out[n].name.data = h[i].lowcase_key;
            out[n].name.len = h[i].key.len;
            out[n].value.data = h[i].value.data;
            out[n].value.len = h[i].value.len;
            n++;
        }
    }

    v->headers = out;
    v->nheaders = n;

    return NGX_OK;
}


static ngx_http_idv_sdk_key_t *
ngx_http_idv_sdk_find_key(ngx_array_t *keys, ngx_str_t *id)
{
    ngx_int_t                rc;
    ngx_uint_t               lo, hi, mid;
    ngx_http_idv_sdk_key_t  *key;

    key = keys->elts;
    lo = 0;
    hi = keys->nelts;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memn2cmp(id->data, key[mid].id.data, id->len,
                          key[mid].id.len);

        if (rc == 0) {
            return &key[mid];
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/*
 * CHECK: a nonce is remembered per AccessKeyId (keep: never evicted)
 * until the request could no longer pass the timestamp check.  Only a
 * request that passed every check of the SDK endpoint uses one up; a
 * full zone refuses the request rather than forget a nonce.
 */

static ngx_int_t
ngx_http_idv_sdk_nonce(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_str_t                      msg;
    ngx_http_idv_sdk_ctx_t        *sctx;
    ngx_http_idv_sdk_main_conf_t  *smcf;

    sctx = ngx_http_get_module_ctx(r, ngx_http_idv_sdk_module);

    if (sctx == NULL || sctx->checked) {
        return NGX_DECLINED;
    }

    if (sctx->batch.pending) {
        return NGX_AGAIN;
    }

    if (!sctx->sent) {
        smcf = ngx_http_get_module_main_conf(r, ngx_http_idv_sdk_module);

        sctx->op.store = smcf->store;
        sctx->op.op = NGX_HTTP_IDV_STORE_ADD;
        sctx->op.keep = 1;

        sctx->batch.ops = &sctx->op;
        sctx->batch.nops = 1;

        sctx->sent = 1;

        if (ngx_http_idv_state_call(r, &sctx->batch) == NGX_AGAIN) {
            return NGX_AGAIN;
        }
    }

    sctx->checked = 1;

    rc = sctx->batch.rc;

    if (rc == NGX_HTTP_IDV_STORE_FULL) {
        ngx_str_set(&msg, "The gateway has no room left to remember "
                          "signature nonces; retry later.");
        return ngx_http_idv_sdk_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "Gateway.StateFull", &msg,
                                      &sctx->key_id);
    }

    if (rc != NGX_OK) {
        ngx_str_set(&msg, "The gateway cannot check the signature nonce "
                          "now; retry later.");
        return ngx_http_idv_sdk_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "Gateway.StateUnavailable", &msg,
                                      &sctx->key_id);
    }

    if (sctx->op.rc == NGX_DECLINED) {
        ngx_str_set(&msg, "Specified signature nonce was used already.");
        return ngx_http_idv_sdk_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "SignatureNonceUsed", &msg,
                                      &sctx->key_id);
    }

    return NGX_DECLINED;
}


/* the nonce's key and lifetime, for the CHECK phase */

static ngx_int_t
ngx_http_idv_sdk_nonce_key(ngx_http_request_t *r, ngx_http_idv_verify_t *v,
    ngx_http_idv_sdk_key_t *key)
{
    u_char                  *p;
    time_t                   left;
    ngx_http_idv_sdk_ctx_t  *sctx;

    sctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_sdk_ctx_t));
    if (sctx == NULL) {
        return NGX_ERROR;
    }

    ngx_http_set_ctx(r, sctx, ngx_http_idv_sdk_module);

    sctx->key_id = key->id;

    sctx->op.key.len = v->access_key_id.len + 1 + v->nonce.len;
    sctx->op.key.data = ngx_pnalloc(r->pool, sctx->op.key.len);

    if (sctx->op.key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(sctx->op.key.data, v->access_key_id.data,
                   v->access_key_id.len);
    *p++ = '\0';
    ngx_memcpy(p, v->nonce.data, v->nonce.len);

    left = v->time + NGX_HTTP_IDV_VERIFY_WINDOW + 1 - ngx_time();
    sctx->op.ttl = (ngx_msec_t) ngx_max(left, 1) * 1000;

    return NGX_OK;
}


/*
 * The verified request as the corridor's: API parameters only (the
 * signature's own are dropped), checked against the operation's row
 * exactly as a backend's JSON would be.
 */

static ngx_int_t
ngx_http_idv_sdk_call(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_verify_t *v)
{
    size_t                  i;
    ngx_http_idv_req_t     *rq;
    ngx_http_idv_param_t   *prm;

    rq = &ctx->req;

    ngx_http_idv_req_init(r, rq, ctx->conf);

    for (i = 0; i < v->nparams; i++) {
        prm = &v->params[i];

        /* V3 sends none of V1's own: a Timestamp there is the action's */

        if (v->algorithm == NGX_HTTP_IDV_SIGN_V1
            && ngx_http_idv_verify_system_param(prm->key.data, prm->key.len))
        {
            continue;
        }

        if (ngx_http_idv_req_add_param(rq, prm->key.data, prm->key.len,
                                       prm->value.data, prm->value.len)
            != 0)
        {
            (void) ngx_http_idv_error(r, ctx, rq->status, rq->code,
                                      rq->message);
            return ngx_http_idv_run(r, ctx);
        }
    }

    return ngx_http_idv_start(r, ctx);
}


static ngx_int_t
ngx_http_idv_sdk_verify_error(ngx_http_request_t *r, ngx_http_idv_verify_t *v)
{
    if (v->code == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_idv_sdk_refuse(r, v->status, v->code,
                                   ngx_http_idv_ngx_str(&v->message),
                                   v->access_key_id.len
                                   ? ngx_http_idv_ngx_str(&v->access_key_id)
                                   : NULL);
}


/* a refusal in the service's own error shape, logged without secrets */

static ngx_int_t
ngx_http_idv_sdk_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, const char *code, ngx_str_t *message,
    ngx_str_t *key_id)
{
    u_char                       safe[64], *text;
    size_t                       i;
    ngx_http_idv_sdk_loc_conf_t *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_sdk_module);

    /* the AccessKeyId is the client's: printable characters only */

    for (i = 0; key_id && i < key_id->len && i < sizeof(safe); i++) {
        safe[i] = (key_id->data[i] > 0x20 && key_id->data[i] < 0x7f
                   && key_id->data[i] != '"' && key_id->data[i] != '\\')
                  ? key_id->data[i] : '?';
    }

    ngx_log_error(lcf->log_level, r->connection->log, 0,
                  "idv: SDK request refused: %s, AccessKeyId \"%*s\"",
                  code, i, safe);

    text = ngx_pnalloc(r->pool, message->len + 1);
    if (text == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(text, message->data, message->len) = '\0';

    (void) ngx_http_idv_error(r, ctx, status, code, (char *) text);

    ctx->answer.service = 1;

    return NGX_HTTP_IDV_ANSWER;
}


/* a refusal before the pipeline started */

static ngx_int_t
ngx_http_idv_sdk_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, ngx_str_t *message, ngx_str_t *key_id)
{
    ngx_http_idv_ctx_t  *ctx;

    ctx = ngx_http_idv_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_idv_sdk_error(r, ctx, status, code, message, key_id)
        != NGX_HTTP_IDV_ANSWER)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_idv_run(r, ctx);
}


static void *
ngx_http_idv_sdk_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_sdk_main_conf_t));
}


static void *
ngx_http_idv_sdk_create_srv_conf(ngx_conf_t *cf)
{
    /*
     * set by ngx_pcalloc():
     *
     *     conf->keys = NULL;
     *     conf->gateway = 0;
     */

    return ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_sdk_srv_conf_t));
}


static char *
ngx_http_idv_sdk_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_sdk_srv_conf_t *prev = parent;
    ngx_http_idv_sdk_srv_conf_t *conf = child;

    if (conf->keys == NULL) {
        conf->keys = prev->keys;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_idv_sdk_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idv_sdk_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_sdk_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_idv_sdk_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_sdk_loc_conf_t *prev = parent;
    ngx_http_idv_sdk_loc_conf_t *conf = child;

    ngx_http_idv_loc_conf_t       *ilcf;
    ngx_http_idv_sdk_srv_conf_t   *sscf;
    ngx_http_idv_sdk_main_conf_t  *smcf;

    /* like the content handler it sets, the flag is not inherited */

    if (conf->enable == NGX_CONF_UNSET) {
        conf->enable = 0;
    }

    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_WARN);

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    smcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_sdk_module);

    if (smcf->store == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_sdk_gateway\" needs \"idv_sdk_zone "
                           "zone=NAME:SIZE\" in the http block (the memory "
                           "of used nonces)",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_idv_sdk_module);

    if (sscf->keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_sdk_gateway\" needs "
                           "\"idv_tenant_keys\" in the server or http block "
                           "(the tenants' keys)",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    sscf->gateway = 1;

    /* the main module's configuration of this location: the master key */

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (ilcf->op) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_sdk_gateway\" cannot be combined "
                           "with \"idv_action\": the SDK request names its "
                           "action", ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    if (ngx_http_idv_credentials_resolve(cf, ilcf,
                                         ": \"idv_sdk_gateway\" has no "
                                         "master credentials to re-sign "
                                         "with")
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ilcf->pass.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_sdk_gateway\" needs \"idv_pass\": the "
                           "URI of an internal location that proxies to the "
                           "ID Verification endpoint",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* idv_sdk_zone zone=NAME:SIZE; */

static char *
ngx_http_idv_sdk_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_sdk_main_conf_t *smcf = conf;

    if (smcf->store) {
        return "is duplicate";
    }

    smcf->store = ngx_http_idv_store_zone(cf, "sdk_nonce",
                                          &ngx_http_idv_sdk_module, NULL);
    if (smcf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * idv_tenant_keys FILE: one key a line,
 *
 *     # tenant  AccessKeyId  AccessKeySecret  [Action,Action,...]
 *     acme      LTAIacme01   3b0c…            Initialize,CheckResult
 *
 * read at configuration time, so a reload reads it again.  Messages name
 * the file, the line and the AccessKeyId, never a secret.
 */

static char *
ngx_http_idv_sdk_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_sdk_srv_conf_t *sscf = conf;

    ngx_str_t  *value;

    if (sscf->keys) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_idv_conf_file_parse(cf, "idv_tenant_keys", &value[1],
                                     NGX_HTTP_IDV_SDK_FILE_MAX,
                                     ngx_http_idv_sdk_keys_parse, sscf)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_sdk_keys_parse(ngx_http_idv_conf_file_t *file, void *data)
{
    ngx_http_idv_sdk_srv_conf_t *sscf = data;

    u_char                   *s, *e, *a;
    ngx_str_t                 f[4], name, line;
    ngx_uint_t                i, k, nf;
    ngx_conf_t               *cf;
    const ngx_http_idv_op_t  *op;
    ngx_http_idv_sdk_key_t   *key;

    cf = file->cf;

    sscf->keys = ngx_array_create(cf->pool, 8,
                                  sizeof(ngx_http_idv_sdk_key_t));
    if (sscf->keys == NULL) {
        return NGX_ERROR;
    }

    while (ngx_http_idv_conf_file_line(file, &line) == NGX_OK) {

        nf = ngx_http_idv_conf_file_fields(&line, f, 4);

        if (nf < 3 || nf > 4) {
            ngx_http_idv_conf_file_error(file, file->line,
                                         "expected \"tenant access_key_id "
                                         "access_key_secret [Action,...]\"");
            return NGX_ERROR;
        }

        /* names that go into logs, metrics and cache keys as they are */

        for (k = 0; k < 2; k++) {
            if (f[k].len > NGX_HTTP_IDV_SDK_NAME_MAX) {
                goto bad_name;
            }

            for (i = 0; i < f[k].len; i++) {
                if (!(ngx_http_idv_sdk_alnum(f[k].data[i])
                      || f[k].data[i] == '-'
                      || f[k].data[i] == '_' || f[k].data[i] == '.'
                      || (k == 0 && (f[k].data[i] == ':'
                                     || f[k].data[i] == '@'))))
                {
                    goto bad_name;
                }
            }
        }

        for (i = 0; i < f[2].len; i++) {
            if (f[2].data[i] <= 0x20 || f[2].data[i] >= 0x7f) {
                ngx_http_idv_conf_file_error(file, file->line,
                                             "the secret of \"%V\" has a "
                                             "character that is not "
                                             "printable ASCII", &f[1]);
                return NGX_ERROR;
            }
        }

        if (f[2].len < NGX_HTTP_IDV_SDK_SECRET_MIN) {
            ngx_http_idv_conf_file_error(file, file->line,
                                         "the secret of \"%V\" is shorter "
                                         "than %d characters; generate one "
                                         "with e.g. \"openssl rand -base64 "
                                         "24\"", &f[1],
                                         NGX_HTTP_IDV_SDK_SECRET_MIN);
            return NGX_ERROR;
        }

        key = ngx_array_push(sscf->keys);
        if (key == NULL) {
            return NGX_ERROR;
        }

        key->tenant.data = ngx_pstrdup(cf->pool, &f[0]);
        key->tenant.len = f[0].len;
        key->id.data = ngx_pstrdup(cf->pool, &f[1]);
        key->id.len = f[1].len;
        key->secret.data = ngx_pstrdup(cf->pool, &f[2]);
        key->secret.len = f[2].len;
        key->allowed = NULL;
        key->line = file->line;

        if (key->tenant.data == NULL || key->id.data == NULL
            || key->secret.data == NULL)
        {
            return NGX_ERROR;
        }

        if (nf == 3) {
            continue;
        }

        /* the actions this key may call */

        key->allowed = ngx_pcalloc(cf->pool, ngx_http_idv_nops);
        if (key->allowed == NULL) {
            return NGX_ERROR;
        }

        s = f[3].data;
        e = f[3].data + f[3].len;

        while (s <= e) {
            a = ngx_strlchr(s, e, ',');
            if (a == NULL) {
                a = e;
            }

            name.data = s;
            name.len = a - s;

            op = ngx_http_idv_op_find(name.data, name.len);

            if (op == NULL) {
                ngx_http_idv_conf_file_error(file, file->line,
                                             "unknown action \"%V\": it is "
                                             "not an action of "
                                             "cloudauth-intl %s", &name,
                                             NGX_HTTP_IDV_API_VERSION);
                return NGX_ERROR;
            }

            key->allowed[op - ngx_http_idv_ops] = 1;

            s = a + 1;
        }
    }

    if (sscf->keys->nelts == 0) {
        ngx_http_idv_conf_file_error(file, 0, "holds no key");
        return NGX_ERROR;
    }

    ngx_sort(sscf->keys->elts, sscf->keys->nelts,
             sizeof(ngx_http_idv_sdk_key_t), ngx_http_idv_sdk_key_cmp);

    key = sscf->keys->elts;

    for (i = 1; i < sscf->keys->nelts; i++) {
        if (ngx_http_idv_sdk_key_cmp(&key[i - 1], &key[i]) == 0) {
            ngx_http_idv_conf_file_error(file,
                                         ngx_max(key[i - 1].line,
                                                 key[i].line),
                                         "duplicate AccessKeyId \"%V\" "
                                         "(first on line %ui)", &key[i].id,
                                         ngx_min(key[i - 1].line,
                                                 key[i].line));
            return NGX_ERROR;
        }
    }

    return NGX_OK;

bad_name:

    ngx_http_idv_conf_file_error(file, file->line,
                                 "the %s may hold only letters, digits and "
                                 "\"-_.%s\", up to %d characters",
                                 k ? "AccessKeyId" : "tenant",
                                 k ? "" : ":@", NGX_HTTP_IDV_SDK_NAME_MAX);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_idv_sdk_key_cmp(const void *one, const void *two)
{
    const ngx_http_idv_sdk_key_t  *a = one;
    const ngx_http_idv_sdk_key_t  *b = two;

    return ngx_memn2cmp(a->id.data, b->id.data, a->id.len, b->id.len);
}


static char *
ngx_http_idv_sdk_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_sdk_loc_conf_t *lcf = conf;

    ngx_http_idv_loc_conf_t   *ilcf;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->enable = 1;

    /* answers and nginx's own error pages here take the service's shape */

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);
    ilcf->dialect = NGX_HTTP_IDV_DIALECT_SDK;

    if (ngx_http_idv_conf_where_set(cf, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_idv_sdk_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_sdk_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_idv_sdk_post_read;

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_CHECK,
                                    ngx_http_idv_sdk_nonce);
}
