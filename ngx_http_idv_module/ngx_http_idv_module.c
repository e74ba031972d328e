
/*
 * ngx_http_idv_module: directives, configuration and wiring.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_conf_file.h"
#include "ngx_http_idv_credentials.h"
#include "ngx_http_idv_verify.h"


/* the longest parameter name idv_allow_param takes */
#define NGX_HTTP_IDV_ALLOW_NAME_MAX  64


#define NGX_HTTP_IDV_CREDENTIALS_MAX  (64 * 1024)


typedef struct {
    ngx_http_idv_loc_conf_t    *lcf;
    ngx_str_t                   profile;
} ngx_http_idv_credentials_ctx_t;


static ngx_int_t ngx_http_idv_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_idv_init(ngx_conf_t *cf);
static void *ngx_http_idv_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idv_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_idv_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idv_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_idv_access_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_credentials(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_pass(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_allow_param(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_allow_check(ngx_conf_t *cf,
    ngx_http_idv_loc_conf_t *conf);
static char *ngx_http_idv_action(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_credentials_parse(
    ngx_http_idv_conf_file_t *file, void *data);
static ngx_int_t ngx_http_idv_init_module(ngx_cycle_t *cycle);
static void ngx_http_idv_exit(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_idv_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_conf_enum_t  ngx_http_idv_signatures[] = {
    { ngx_string("v3"), NGX_HTTP_IDV_SIGN_V3 },
    { ngx_string("v1"), NGX_HTTP_IDV_SIGN_V1 },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_idv_retries_bounds = {
    ngx_conf_check_num_bounds, 0, 10
};


static ngx_command_t  ngx_http_idv_commands[] = {

    { ngx_string("idv_access_key_id"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_access_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, access_key_id),
      NULL },

    { ngx_string("idv_access_key_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_access_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, access_key_secret),
      NULL },

    { ngx_string("idv_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_idv_credentials,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_credentials_source"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_idv_credentials_source,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_pass"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_pass,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, signature),
      &ngx_http_idv_signatures },

    { ngx_string("idv_action"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_idv_action,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_allow_param"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_idv_allow_param,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_product_code"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, product),
      NULL },

    { ngx_string("idv_tenant"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, tenant),
      NULL },

    { ngx_string("idv_retries"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, retries),
      &ngx_http_idv_retries_bounds },

    { ngx_string("idv_retry_budget"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, retry_budget),
      NULL },

    { ngx_string("idv_expand_json"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_loc_conf_t, expand_json),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_module_ctx = {
    ngx_http_idv_add_variables,            /* preconfiguration */
    ngx_http_idv_init,                     /* postconfiguration */

    ngx_http_idv_create_main_conf,         /* create main configuration */
    ngx_http_idv_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idv_create_loc_conf,          /* create location configuration */
    ngx_http_idv_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_idv_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_module_ctx,              /* module context */
    ngx_http_idv_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_idv_init_module,              /* init module */
    ngx_http_idv_init_process_handler,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_idv_exit,                     /* exit process */
    ngx_http_idv_exit,                     /* exit master */
    NGX_MODULE_V1_PADDING
};


enum {
    NGX_HTTP_IDV_VAR_HOST = 0,
    NGX_HTTP_IDV_VAR_ACTION,
    NGX_HTTP_IDV_VAR_CODE,
    NGX_HTTP_IDV_VAR_TRANSACTION_ID,
    NGX_HTTP_IDV_VAR_MERCHANT_BIZ_ID,
    NGX_HTTP_IDV_VAR_UPSTREAM_TIME,
    NGX_HTTP_IDV_VAR_ATTEMPTS,
    NGX_HTTP_IDV_VAR_TENANT
};


static ngx_http_variable_t  ngx_http_idv_vars[] = {

    { ngx_string("idv_host"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_HOST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_action"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_ACTION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_code"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_CODE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_transaction_id"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_TRANSACTION_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_merchant_biz_id"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_MERCHANT_BIZ_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_upstream_time"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_UPSTREAM_TIME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_attempts"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_ATTEMPTS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idv_tenant"), NULL, ngx_http_idv_variable,
      NGX_HTTP_IDV_VAR_TENANT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_idv_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    /* the pipeline's handlers register anew in every configuration */
    ngx_http_idv_handlers_reset();

    for (v = ngx_http_idv_vars; v->name.len; v++) {
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
ngx_http_idv_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char              *p;
    ngx_str_t           *s;
    ngx_http_idv_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_idv_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = NULL;

    switch (data) {

    case NGX_HTTP_IDV_VAR_HOST:
        s = &ctx->conf->endpoint;
        break;

    case NGX_HTTP_IDV_VAR_ACTION:
        /* an SDK request refused before its action was known has none */
        s = ctx->conf->op ? ngx_http_idv_ngx_str(&ctx->conf->op->name)
                          : NULL;
        break;

    case NGX_HTTP_IDV_VAR_CODE:
        s = &ctx->code;
        break;

    case NGX_HTTP_IDV_VAR_TRANSACTION_ID:
        s = &ctx->transaction_id;
        break;

    case NGX_HTTP_IDV_VAR_MERCHANT_BIZ_ID:
        s = &ctx->merchant_biz_id;
        break;

    case NGX_HTTP_IDV_VAR_TENANT:
        s = &ctx->tenant;
        break;

    case NGX_HTTP_IDV_VAR_UPSTREAM_TIME:
        if (ctx->attempts == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 4);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%T.%03M",
                             (time_t) ctx->upstream_time / 1000,
                             ctx->upstream_time % 1000)
                 - p;
        v->data = p;
        goto found;

    case NGX_HTTP_IDV_VAR_ATTEMPTS:
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%ui", ctx->attempts) - p;
        v->data = p;
        goto found;
    }

    if (s == NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;

found:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the registry of stores (ngx_http_idv_store.c) */

static void *
ngx_http_idv_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idv_main_conf_t  *imcf;

    imcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_main_conf_t));
    if (imcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&imcf->stores, cf->pool, 4, sizeof(void *))
        != NGX_OK
        || ngx_array_init(&imcf->sources, cf->pool, 2, sizeof(void *))
           != NGX_OK)
    {
        return NULL;
    }

    return imcf;
}


/*
 * Before any module merges its locations: the zones that name a remote
 * store find it (the merges compare where zones are kept).
 */

static char *
ngx_http_idv_init_main_conf(ngx_conf_t *cf, void *conf)
{
    if (ngx_http_idv_redis_attach(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_idv_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idv_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->access_key_id = { 0, NULL };
     *     conf->access_key_secret = { 0, NULL };
     *     conf->credentials = { 0, NULL };
     *     conf->endpoint = { 0, NULL };
     *     conf->pass = { 0, NULL };
     *     conf->op = NULL;
     *     conf->product = { 0, NULL };
     *     conf->source = NULL;
     */

    conf->signature = NGX_CONF_UNSET_UINT;
    conf->expand_json = NGX_CONF_UNSET;
    conf->tenant = NGX_CONF_UNSET_PTR;
    conf->retries = NGX_CONF_UNSET_UINT;
    conf->retry_budget = NGX_CONF_UNSET_MSEC;
    conf->allow = NGX_CONF_UNSET_PTR;
    conf->allow_where = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_idv_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_idv_loc_conf_t *prev = parent;
    ngx_http_idv_loc_conf_t *conf = child;

    size_t                          i;
    ngx_uint_t                      own_keys;
    const ngx_http_idv_op_param_t  *p;

    /*
     * A level that sets a long-lived key or a source of temporary
     * credentials inherits neither from above, except that assume_role
     * signs its STS call with the key of the levels around it.
     */

    own_keys = (conf->access_key_id.data || conf->access_key_secret.data);

    if (conf->source == NULL && !own_keys) {
        conf->source = prev->source;
    }

    if (!own_keys && (conf->source == NULL || conf->source == prev->source
                      || ngx_http_idv_credentials_assume(conf->source)))
    {
        conf->access_key_id = prev->access_key_id;
        conf->access_key_secret = prev->access_key_secret;
        conf->credentials = prev->credentials;
        conf->keys_where = prev->keys_where;
    }

    if ((conf->access_key_id.data == NULL)
        != (conf->access_key_secret.data == NULL))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_access_key_id\" and "
                           "\"idv_access_key_secret\" must be set together, "
                           "but only %V is",
                           ngx_http_idv_conf_where(cf), &conf->keys_where);
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_str_value(conf->endpoint, prev->endpoint,
                             NGX_HTTP_IDV_DEFAULT_ENDPOINT);
    ngx_conf_merge_str_value(conf->pass, prev->pass, "");
    ngx_conf_merge_uint_value(conf->signature, prev->signature,
                              NGX_HTTP_IDV_SIGN_V3);
    /* a product code set around an action that takes none is not its */

    if (conf->product.data == NULL && conf->op
        && ngx_http_idv_op_param(conf->op, (u_char *) "ProductCode", 11)
           == NULL)
    {
        ngx_str_set(&conf->product, "");

    } else {
        ngx_conf_merge_str_value(conf->product, prev->product, "");
    }
    ngx_conf_merge_value(conf->expand_json, prev->expand_json, 0);
    ngx_conf_merge_ptr_value(conf->tenant, prev->tenant, NULL);
    ngx_conf_merge_uint_value(conf->retries, prev->retries, 2);
    ngx_conf_merge_msec_value(conf->retry_budget, prev->retry_budget, 1000);

    /* a level's idv_allow_param list replaces the one around it */

    if (conf->allow == NGX_CONF_UNSET_PTR) {
        conf->allow = prev->allow;
        conf->allow_where = prev->allow_where;
    }

    if (conf->allow == NGX_CONF_UNSET_PTR) {
        conf->allow = NULL;
        conf->allow_where = NULL;
    }

    if (conf->op == NULL) {
        return NGX_CONF_OK;
    }

    if (ngx_http_idv_allow_check(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /*
     * V1 signs with parameters of its own (Timestamp, ...): an action
     * with a parameter of that name (IdnAuthorityVerifyIntl's Timestamp)
     * would send it twice
     */

    if (conf->signature == NGX_HTTP_IDV_SIGN_V1) {
        for (i = 0; i < conf->op->nparams; i++) {
            p = &conf->op->params[i];

            if (ngx_http_idv_verify_system_param(p->name.data, p->name.len)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: action %V takes a parameter %V, "
                                   "which \"idv_signature v1\" sets as "
                                   "its own: use \"idv_signature v3\"",
                                   ngx_http_idv_conf_where(cf),
                                   ngx_http_idv_ngx_str(&conf->op->name),
                                   ngx_http_idv_ngx_str(&p->name));
                return NGX_CONF_ERROR;
            }
        }
    }

    /* this location serves an action: it must be able to sign and send */

    if (ngx_http_idv_credentials_resolve(cf, conf, " has no credentials")
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (conf->pass.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V needs \"idv_pass\": the URI of an internal "
                           "location that proxies to the ID Verification "
                           "endpoint", ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    p = ngx_http_idv_op_param(conf->op, (u_char *) "ProductCode", 11);

    if (conf->product.len && p == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_product_code %V\" does not apply: "
                           "action %V takes no ProductCode",
                           ngx_http_idv_conf_where(cf), &conf->product,
                           ngx_http_idv_ngx_str(&conf->op->name));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_access_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    u_char  *p;
    size_t   len;

    if (lcf->credentials.len) {
        return "conflicts with \"idv_credentials\" on the same level";
    }

    if (lcf->source && !ngx_http_idv_credentials_assume(lcf->source)) {
        return "conflicts with \"idv_credentials_source\" on the same level";
    }

    /* the value is a secret: only the directive's name and place */

    if (lcf->keys_where.len == 0) {
        len = sizeof("\"\" ( :)") - 1 + cmd->name.len
              + cf->conf_file->file.name.len + NGX_INT_T_LEN;

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        lcf->keys_where.data = p;
        lcf->keys_where.len = ngx_sprintf(p, "\"%V\" (%V:%ui)", &cmd->name,
                                          &cf->conf_file->file.name,
                                          cf->conf_file->line)
                              - p;
    }

    return ngx_conf_set_str_slot(cf, cmd, conf);
}


static char *
ngx_http_idv_credentials(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    ngx_str_t                        *value;
    ngx_http_idv_credentials_ctx_t    ctx;

    if (lcf->credentials.len) {
        return "is duplicate";
    }

    if (lcf->access_key_id.data || lcf->access_key_secret.data) {
        return "conflicts with \"idv_access_key_id\" / "
               "\"idv_access_key_secret\" on the same level";
    }

    if (lcf->source && !ngx_http_idv_credentials_assume(lcf->source)) {
        return "conflicts with \"idv_credentials_source\" on the same level";
    }

    value = cf->args->elts;

    ctx.lcf = lcf;
    ngx_str_set(&ctx.profile, "default");

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "profile=", 8) != 0
            || value[2].len == 8)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\", expected "
                               "\"profile=NAME\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        ctx.profile.data = value[2].data + 8;
        ctx.profile.len = value[2].len - 8;
    }

    if (ngx_http_idv_conf_file_parse(cf, "idv_credentials", &value[1],
                                     NGX_HTTP_IDV_CREDENTIALS_MAX,
                                     ngx_http_idv_credentials_parse, &ctx)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The Alibaba Cloud credentials file, in INI form:
 *
 *     [default]
 *     type = access_key
 *     access_key_id = ...
 *     access_key_secret = ...
 */

static ngx_int_t
ngx_http_idv_credentials_parse(ngx_http_idv_conf_file_t *file, void *data)
{
    ngx_http_idv_credentials_ctx_t *ctx = data;

    u_char                   *eq, *v, *ve;
    ngx_str_t                 line, key, *dst, *profile;
    ngx_uint_t                in_profile, found;
    ngx_http_idv_loc_conf_t  *lcf;

    lcf = ctx->lcf;
    profile = &ctx->profile;
    in_profile = 0;
    found = 0;

    while (ngx_http_idv_conf_file_line(file, &line) == NGX_OK) {

        if (line.data[0] == '[') {
            if (line.len < 2 || line.data[line.len - 1] != ']') {
                ngx_http_idv_conf_file_error(file, file->line,
                                             "expected \"[profile]\"");
                return NGX_ERROR;
            }

            in_profile = (line.len - 2 == profile->len
                          && ngx_strncmp(line.data + 1, profile->data,
                                         profile->len)
                             == 0);

            if (in_profile && !found) {
                found = file->line;
            }

            continue;
        }

        eq = ngx_strlchr(line.data, line.data + line.len, '=');

        if (eq == NULL) {
            ngx_http_idv_conf_file_error(file, file->line,
                                         "expected \"key = value\"");
            return NGX_ERROR;
        }

        if (!in_profile) {
            continue;
        }

        key.data = line.data;
        key.len = eq - line.data;

        while (key.len && (key.data[key.len - 1] == ' '
                           || key.data[key.len - 1] == '\t'))
        {
            key.len--;
        }

        v = eq + 1;
        ve = line.data + line.len;

        while (v < ve && (*v == ' ' || *v == '\t')) {
            v++;
        }

        if (key.len == sizeof("access_key_id") - 1
            && ngx_strncmp(key.data, "access_key_id", key.len) == 0)
        {
            dst = &lcf->access_key_id;

        } else if (key.len == sizeof("access_key_secret") - 1
                   && ngx_strncmp(key.data, "access_key_secret", key.len)
                      == 0)
        {
            dst = &lcf->access_key_secret;

        } else {
            continue;
        }

        dst->len = ve - v;
        dst->data = ngx_pnalloc(file->cf->pool, dst->len + 1);
        if (dst->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(dst->data, v, dst->len);
        dst->data[dst->len] = '\0';
    }

    if (!found) {
        ngx_http_idv_conf_file_error(file, 0, "has no profile [%V]",
                                     profile);
        return NGX_ERROR;
    }

    if (lcf->access_key_id.len == 0 || lcf->access_key_secret.len == 0) {
        ngx_http_idv_conf_file_error(file, found, "profile [%V] needs both "
                                     "access_key_id and access_key_secret",
                                     profile);
        return NGX_ERROR;
    }

    lcf->credentials = file->name;

    return NGX_OK;
}


static char *
ngx_http_idv_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    u_char     *p;
    ngx_str_t  *value;

    if (lcf->endpoint.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strlcasestrn(value[1].data, value[1].data + value[1].len,
                         (u_char *) "://", 3 - 1)
        != NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_endpoint\" takes a host[:port] such as "
                           "\"%s\", not a URL", NGX_HTTP_IDV_DEFAULT_ENDPOINT);
        return NGX_CONF_ERROR;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (*p <= ' ' || *p == '/' || *p == '?' || *p == '#' || *p >= 0x7f) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"idv_endpoint\" host \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len == 0) {
        return "takes a host";
    }

    lcf->endpoint = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_pass(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    ngx_str_t  *value;

    if (lcf->pass.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_pass\" takes the URI of an internal "
                           "location, such as \"/_idv_upstream\"");
        return NGX_CONF_ERROR;
    }

    lcf->pass = value[1];

    return NGX_CONF_OK;
}


/*
 * idv_allow_param NAME query|body: a parameter newer than the operations
 * table, accepted for the actions below as a string (the checks every
 * string gets; never logged, as it may carry personal data) and sent,
 * signed, in the given place.  An action whose row has the name keeps
 * the row's; where the location's action is known at merge time, another
 * placement there is refused.
 */

static char *
ngx_http_idv_allow_param(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    u_char                   *name, c;
    ngx_str_t                *value, *where;
    ngx_uint_t                i, body;
    ngx_http_idv_op_param_t  *p;

    value = cf->args->elts;

    /*
     * the API's names: a letter, then letters, digits and '_'; none of
     * the signature's own (Action, Timestamp, Signature, ...), which the
     * signer sets
     */

    for (i = 0; i < value[1].len; i++) {
        c = value[1].data[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (i > 0 && ((c >= '0' && c <= '9') || c == '_'))))
        {
            break;
        }
    }

    if (value[1].len == 0 || i < value[1].len
        || value[1].len > NGX_HTTP_IDV_ALLOW_NAME_MAX
        || ngx_http_idv_verify_system_param(value[1].data, value[1].len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_allow_param\": \"%V\" is not a plausible "
                           "parameter name: a letter, then letters, digits "
                           "or \"_\", at most %d characters, none of the "
                           "signature's own (Action, Timestamp, Signature, "
                           "...)", &value[1], NGX_HTTP_IDV_ALLOW_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    if (value[2].len == 5 && ngx_strncmp(value[2].data, "query", 5) == 0) {
        body = 0;

    } else if (value[2].len == 4
               && ngx_strncmp(value[2].data, "body", 4) == 0)
    {
        body = 1;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"idv_allow_param %V\": invalid placement "
                           "\"%V\", it must be \"query\" or \"body\"",
                           &value[1], &value[2]);
        return NGX_CONF_ERROR;
    }

    if (lcf->allow == NGX_CONF_UNSET_PTR) {
        lcf->allow = ngx_array_create(cf->pool, 4,
                                      sizeof(ngx_http_idv_op_param_t));
        lcf->allow_where = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));

        if (lcf->allow == NULL || lcf->allow_where == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = lcf->allow->elts;

    for (i = 0; i < lcf->allow->nelts; i++) {
        if (p[i].name.len == value[1].len
            && ngx_strncmp(p[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"idv_allow_param %V\" is duplicate",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    /* NUL-terminated: the request model reads names as C strings */

    name = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (name == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(name, value[1].data, value[1].len + 1);

    p = ngx_array_push(lcf->allow);
    where = ngx_array_push(lcf->allow_where);

    if (p == NULL || where == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(p, sizeof(ngx_http_idv_op_param_t));

    p->name.data = name;
    p->name.len = value[1].len;
    p->type = NGX_HTTP_IDV_T_STRING;
    p->flags = NGX_HTTP_IDV_P_PII | (body ? NGX_HTTP_IDV_P_BODY : 0);

    where->len = cf->conf_file->file.name.len + NGX_INT_T_LEN + 1;
    where->data = ngx_pnalloc(cf->pool, where->len);
    if (where->data == NULL) {
        return NGX_CONF_ERROR;
    }

    where->len = ngx_sprintf(where->data, "%V:%ui",
                             &cf->conf_file->file.name, cf->conf_file->line)
                 - where->data;

    return NGX_CONF_OK;
}


/* a location's action may not take an allowed name in another place */

static ngx_int_t
ngx_http_idv_allow_check(ngx_conf_t *cf, ngx_http_idv_loc_conf_t *conf)
{
    ngx_str_t                      *where;
    ngx_uint_t                      i;
    ngx_http_idv_op_param_t        *p;
    const ngx_http_idv_op_param_t  *q;

    if (conf->allow == NULL) {
        return NGX_OK;
    }

    p = conf->allow->elts;
    where = conf->allow_where->elts;

    for (i = 0; i < conf->allow->nelts; i++) {
        q = ngx_http_idv_op_param(conf->op, p[i].name.data, p[i].name.len);

        if (q == NULL
            || (q->flags & NGX_HTTP_IDV_P_BODY)
               == (p[i].flags & NGX_HTTP_IDV_P_BODY))
        {
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_allow_param %V %s\" in %V: action %V "
                           "takes %V in the %s",
                           ngx_http_idv_conf_where(cf),
                           ngx_http_idv_ngx_str(&p[i].name),
                           (p[i].flags & NGX_HTTP_IDV_P_BODY) ? "body"
                                                              : "query",
                           &where[i], ngx_http_idv_ngx_str(&conf->op->name),
                           ngx_http_idv_ngx_str(&p[i].name),
                           (q->flags & NGX_HTTP_IDV_P_BODY) ? "body"
                                                            : "query");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_idv_req_init(ngx_http_request_t *r, ngx_http_idv_req_t *rq,
    ngx_http_idv_loc_conf_t *conf)
{
    rq->op = conf->op;
    rq->alloc = ngx_http_idv_palloc;
    rq->alloc_data = r->pool;

    if (conf->allow) {
        rq->extra = conf->allow->elts;
        rq->nextra = conf->allow->nelts;
    }
}


static char *
ngx_http_idv_action(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->op) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->op = ngx_http_idv_op_find(value[1].data, value[1].len);

    if (lcf->op == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown action \"%V\" in \"idv_action\": it is "
                           "not an action of cloudauth-intl %s",
                           &value[1], NGX_HTTP_IDV_API_VERSION);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_idv_conf_where_set(cf, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_idv_handler;

    return NGX_CONF_OK;
}


/*
 * nginx reports the errors of merge time at the closing brace of http:
 * the directive that makes a location call the API (idv_action,
 * idv_sdk_gateway, idv_callback) records the location's name, its own
 * file:line and, if "args", its arguments, for those errors to name
 */

ngx_int_t
ngx_http_idv_conf_where_set(ngx_conf_t *cf, ngx_uint_t args)
{
    u_char                    *p;
    size_t                     len;
    ngx_str_t                 *value;
    ngx_uint_t                 i, n;
    const char                *how;
    ngx_http_idv_loc_conf_t   *ilcf;
    ngx_http_core_loc_conf_t  *clcf;

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (ilcf->where.len) {
        return NGX_OK;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    how = clcf->exact_match ? "= " : clcf->noregex ? "^~ " : "";

#if (NGX_PCRE)
    if (clcf->regex) {
        how = "~ ";
    }
#endif

    value = cf->args->elts;
    n = args ? cf->args->nelts : 1;

    len = sizeof("location ^~ \"\" (:, \"\")") - 1 + clcf->name.len
          + cf->conf_file->file.name.len + NGX_INT_T_LEN;

    for (i = 0; i < n; i++) {
        len += 1 + value[i].len;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ilcf->where.data = p;

    p = ngx_sprintf(p, "location %s\"%V\" (%V:%ui, \"%V", how, &clcf->name,
                    &cf->conf_file->file.name, cf->conf_file->line,
                    &value[0]);

    for (i = 1; i < n; i++) {
        p = ngx_sprintf(p, " %V", &value[i]);
    }

    *p++ = '"';
    *p++ = ')';

    ilcf->where.len = p - ilcf->where.data;

    return NGX_OK;
}


/* at merge time: the location (or server) whose configuration is merged */

ngx_str_t *
ngx_http_idv_conf_where(ngx_conf_t *cf)
{
    static ngx_str_t           unknown = ngx_string("a location");

    u_char                    *p;
    size_t                     len;
    ngx_str_t                 *where;
    ngx_http_idv_loc_conf_t   *ilcf;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_core_srv_conf_t  *cscf;

    ilcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_idv_module);

    if (ilcf->where.len) {
        return &ilcf->where;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    len = sizeof("location \"\"") - 1 + clcf->name.len;

    if (clcf->name.len == 0 && cscf->file_name) {
        len = sizeof("server (:)") - 1 + ngx_strlen(cscf->file_name)
              + NGX_INT_T_LEN;
    }

    where = ngx_palloc(cf->pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(cf->pool, len);

    if (where == NULL || p == NULL) {
        return &unknown;
    }

    where->data = p;

    if (clcf->name.len) {
        p = ngx_sprintf(p, "location \"%V\"", &clcf->name);

    } else if (cscf->file_name) {
        p = ngx_sprintf(p, "server (%s:%ui)", cscf->file_name, cscf->line);

    } else {
        return &unknown;
    }

    where->len = p - where->data;

    return where;
}


static ngx_int_t
ngx_http_idv_init(ngx_conf_t *cf)
{
    ngx_http_idv_upstream_init();

    if (ngx_http_idv_credentials_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_idv_filter_init(cf);
}


static ngx_int_t
ngx_http_idv_init_module(ngx_cycle_t *cycle)
{
    if (ngx_http_idv_sign_init() != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "idv: cannot load the SHA-256, SHA-1 and HMAC "
                      "implementations from OpenSSL");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_idv_exit(ngx_cycle_t *cycle)
{
    ngx_http_idv_sign_cleanup();
}
