
/*
 * ngx_http_idv_module: temporary credentials.
 *
 * idv_credentials_source fetches STS credentials (AccessKeyId,
 * AccessKeySecret, SecurityToken, Expiration) from the ECS instance
 * metadata service, from STS AssumeRoleWithOIDC (RRSA on ACK) or from
 * STS AssumeRole, each through an internal location the way idv_pass
 * reaches the service.  The credentials live in a small shared memory
 * zone of their own, so that every worker signs with the same ones and a
 * reload keeps them.  Before each signed call (the PREPARE phase) a
 * request takes the current credentials; when less than five minutes
 * remain, one request at a time fetches new ones while the others go on
 * with the current ones.  Expired credentials are never used: with none
 * valid, a request is answered 503 Gateway.CredentialsUnavailable and
 * nothing is sent.
 *
 * No secret, token or metadata session token reaches a log line above
 * debug, an answer or a variable.
 */


#include "ngx_http_idv_credentials.h"

#include <cjson/cJSON.h>


#define NGX_HTTP_IDV_CREDS_ECS          0
#define NGX_HTTP_IDV_CREDS_OIDC         1
#define NGX_HTTP_IDV_CREDS_ASSUME       2

/* refreshed when less than this remains */
#define NGX_HTTP_IDV_CREDS_EARLY        300
/* never used when less than this remains: a call takes time to arrive */
#define NGX_HTTP_IDV_CREDS_MARGIN       5
/* one fetch at a time: the others wait at most this long for it */
#define NGX_HTTP_IDV_CREDS_CLAIM        60
/* after a failed fetch, the next one no sooner */
#define NGX_HTTP_IDV_CREDS_BACKOFF      1
/* a request without credentials looks again for a fetch's end */
#define NGX_HTTP_IDV_CREDS_POLL         50

#define NGX_HTTP_IDV_CREDS_ID_MAX       128
#define NGX_HTTP_IDV_CREDS_SECRET_MAX   128
#define NGX_HTTP_IDV_CREDS_TOKEN_MAX    8192
#define NGX_HTTP_IDV_CREDS_OIDC_MAX     (20 * 1024)

#define NGX_HTTP_IDV_STS_VERSION        "2015-04-01"
#define NGX_HTTP_IDV_METADATA_TTL       "21600"


/* the steps of a fetch: one subrequest each */
#define NGX_HTTP_IDV_CREDS_IDLE         0
#define NGX_HTTP_IDV_CREDS_MD_TOKEN     1
#define NGX_HTTP_IDV_CREDS_MD_ROLE      2
#define NGX_HTTP_IDV_CREDS_MD_CREDS     3
#define NGX_HTTP_IDV_CREDS_STS          4
#define NGX_HTTP_IDV_CREDS_WAIT         5


typedef struct {
    time_t                      expires;    /* 0: none yet */
    time_t                      claim;      /* a fetch runs until then */
    time_t                      retry;      /* after a failure */
    ngx_atomic_uint_t           refreshes;
    ngx_atomic_uint_t           failures;
    size_t                      id_len;
    size_t                      secret_len;
    size_t                      token_len;
    u_char                      id[NGX_HTTP_IDV_CREDS_ID_MAX];
    u_char                      secret[NGX_HTTP_IDV_CREDS_SECRET_MAX];
    u_char                      token[NGX_HTTP_IDV_CREDS_TOKEN_MAX];
} ngx_http_idv_creds_shctx_t;


struct ngx_http_idv_creds_s {
    ngx_uint_t                  type;
    ngx_str_t                   pass;
    ngx_str_t                   role;           /* ecs: the role, or "" */
    ngx_str_t                   role_arn;
    ngx_str_t                   provider_arn;
    ngx_str_t                   token_file;     /* full name */
    ngx_str_t                   session;
    ngx_str_t                   duration;       /* seconds, as text */

    /* assume_role: the level's long-lived key (set at merge time) */
    ngx_str_t                   key_id;
    ngx_str_t                   key_secret;

    ngx_str_t                   where;          /* "FILE:LINE" */
    ngx_shm_zone_t             *shm_zone;
    ngx_slab_pool_t            *shpool;
    ngx_http_idv_creds_shctx_t *sh;
};


/* a request's part in a fetch */
typedef struct {
    ngx_http_idv_creds_t       *src;
    ngx_uint_t                  step;
    ngx_str_t                   session;        /* metadata token */
    ngx_str_t                   role;
    ngx_event_t                 wait;
    unsigned                    claimed:1;
    unsigned                    tried:1;
} ngx_http_idv_creds_req_t;


static ngx_int_t ngx_http_idv_creds_handler(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_creds_take(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_creds_req_t *cr);
static ngx_int_t ngx_http_idv_creds_next(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_creds_req_t *cr);
static ngx_int_t ngx_http_idv_creds_send(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_creds_req_t *cr);
static ngx_int_t ngx_http_idv_creds_call(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_creds_req_t *cr, ngx_str_t *uri,
    ngx_str_t *args, ngx_str_t *body, ngx_uint_t method);
static ngx_int_t ngx_http_idv_creds_sts_args(ngx_http_request_t *r,
    ngx_http_idv_creds_t *src, ngx_str_t *args, ngx_str_t *body);
static ngx_int_t ngx_http_idv_creds_store(ngx_http_request_t *r,
    ngx_http_idv_creds_req_t *cr, cJSON *creds);
static void ngx_http_idv_creds_failed(ngx_http_request_t *r,
    ngx_http_idv_creds_req_t *cr, const char *why, ngx_uint_t status);
static void ngx_http_idv_creds_wait_handler(ngx_event_t *ev);
static void ngx_http_idv_creds_cleanup(void *data);
static time_t ngx_http_idv_creds_parse_time(const char *s);
static ngx_int_t ngx_http_idv_creds_read_file(ngx_pool_t *pool,
    ngx_log_t *log, ngx_str_t *name, ngx_str_t *out);
static ngx_int_t ngx_http_idv_creds_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_uint_t ngx_http_idv_creds_arn(ngx_str_t *arn, const char *kind);
static ngx_uint_t ngx_http_idv_creds_name(ngx_str_t *s, size_t min,
    size_t max);


static const char  *ngx_http_idv_creds_types[] = {
    "ecs_ram_role", "oidc", "assume_role"
};

static ngx_str_t  ngx_http_idv_creds_get = ngx_string("GET");
static ngx_str_t  ngx_http_idv_creds_put = ngx_string("PUT");


/*
 * idv_credentials_source ecs_ram_role pass=URI [role=NAME];
 * idv_credentials_source oidc pass=URI role_arn=ARN provider_arn=ARN
 *     token_file=FILE [session=NAME] [duration=TIME];
 * idv_credentials_source assume_role pass=URI role_arn=ARN [session=NAME]
 *     [duration=TIME];
 *
 * Parameters left out come from the official credential chain's
 * environment variables where it has one.
 */

char *
ngx_http_idv_credentials_source(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_idv_loc_conf_t *lcf = conf;

    char                      *env;
    u_char                    *p;
    size_t                     len;
    time_t                     duration;
    uint32_t                   crc;
    ngx_str_t                 *value, v, name, token;
    ngx_uint_t                 i, type;
    ngx_shm_zone_t            *zone;
    ngx_http_idv_creds_t      *src, **slot;
    ngx_http_idv_main_conf_t  *imcf;

    if (lcf->source) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (type = 0; type < 3; type++) {
        if (ngx_strcmp(value[1].data, ngx_http_idv_creds_types[type]) == 0) {
            break;
        }
    }

    if (type == 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown source \"%V\" in \"%V\": expected "
                           "\"ecs_ram_role\", \"oidc\" or \"assume_role\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (type != NGX_HTTP_IDV_CREDS_ASSUME
        && (lcf->access_key_id.data || lcf->credentials.len))
    {
        return "conflicts with \"idv_access_key_id\" / \"idv_credentials\" "
               "on the same level (only \"assume_role\" signs with a "
               "long-lived key)";
    }

    src = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_creds_t));
    if (src == NULL) {
        return NGX_CONF_ERROR;
    }

    src->type = type;
    duration = 3600;

    for (i = 2; i < cf->args->nelts; i++) {
        v = value[i];

        p = ngx_strlchr(v.data, v.data + v.len, '=');

        if (p == NULL || p == v.data + v.len - 1) {
            goto invalid;
        }

        name.data = v.data;
        name.len = p - v.data;
        v.data = p + 1;
        v.len -= name.len + 1;

#define ngx_http_idv_creds_is(n)                                             \
        (name.len == sizeof(n) - 1 && ngx_strncmp(name.data, n, name.len) == 0)

        if (ngx_http_idv_creds_is("pass")) {
            if (v.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": \"pass=\" takes the URI of an "
                                   "internal location, such as "
                                   "\"pass=/_idv_credentials\"", &cmd->name);
                return NGX_CONF_ERROR;
            }

            src->pass = v;

        } else if (ngx_http_idv_creds_is("role")
                   && type == NGX_HTTP_IDV_CREDS_ECS)
        {
            src->role = v;

        } else if (ngx_http_idv_creds_is("role_arn")
                   && type != NGX_HTTP_IDV_CREDS_ECS)
        {
            src->role_arn = v;

        } else if (ngx_http_idv_creds_is("provider_arn")
                   && type == NGX_HTTP_IDV_CREDS_OIDC)
        {
            src->provider_arn = v;

        } else if (ngx_http_idv_creds_is("token_file")
                   && type == NGX_HTTP_IDV_CREDS_OIDC)
        {
            src->token_file = v;

        } else if (ngx_http_idv_creds_is("session")
                   && type != NGX_HTTP_IDV_CREDS_ECS)
        {
            src->session = v;

        } else if (ngx_http_idv_creds_is("duration")
                   && type != NGX_HTTP_IDV_CREDS_ECS)
        {
            duration = ngx_parse_time(&v, 1);

            if (duration == (time_t) NGX_ERROR
                || duration < 900 || duration > 43200)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": \"duration=\" takes a time "
                                   "from 15m to 12h, as STS does", &cmd->name);
                return NGX_CONF_ERROR;
            }

        } else {
            goto invalid;
        }

#undef ngx_http_idv_creds_is
    }

    /* the official chain's environment variables fill in what is left */

#define ngx_http_idv_creds_env(field, var)                                   \
    if (src->field.len == 0) {                                               \
        env = getenv(var);                                                   \
        if (env && *env) {                                                   \
            src->field.len = ngx_strlen(env);                                \
            src->field.data = ngx_pnalloc(cf->pool, src->field.len);         \
            if (src->field.data == NULL) {                                   \
                return NGX_CONF_ERROR;                                       \
            }                                                                \
            ngx_memcpy(src->field.data, env, src->field.len);                \
        }                                                                    \
    }

    switch (type) {

    case NGX_HTTP_IDV_CREDS_ECS:
        ngx_http_idv_creds_env(role, "ALIBABA_CLOUD_ECS_METADATA");
        break;

    case NGX_HTTP_IDV_CREDS_OIDC:
        ngx_http_idv_creds_env(provider_arn,
                               "ALIBABA_CLOUD_OIDC_PROVIDER_ARN");
        ngx_http_idv_creds_env(token_file, "ALIBABA_CLOUD_OIDC_TOKEN_FILE");
        /* fall through */

    default:
        ngx_http_idv_creds_env(role_arn, "ALIBABA_CLOUD_ROLE_ARN");
        ngx_http_idv_creds_env(session, "ALIBABA_CLOUD_ROLE_SESSION_NAME");
        break;
    }

#undef ngx_http_idv_creds_env

    /* what nginx -t checks */

    if (src->pass.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V %V\" needs \"pass=URI\": the internal "
                           "location that reaches the %s",
                           &cmd->name, &value[1],
                           type == NGX_HTTP_IDV_CREDS_ECS
                           ? "metadata service (http://100.100.100.200/)"
                           : "STS endpoint (https://sts.aliyuncs.com/)");
        return NGX_CONF_ERROR;
    }

    if (type == NGX_HTTP_IDV_CREDS_ECS) {
        if (src->role.len && !ngx_http_idv_creds_name(&src->role, 1, 64)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": \"role=\" (or "
                               "ALIBABA_CLOUD_ECS_METADATA) is not a RAM "
                               "role name", &cmd->name);
            return NGX_CONF_ERROR;
        }

    } else {
        if (src->role_arn.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V %V\" needs \"role_arn=ARN\" (or "
                               "ALIBABA_CLOUD_ROLE_ARN)", &cmd->name,
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        if (!ngx_http_idv_creds_arn(&src->role_arn, "role")) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": \"role_arn=\" is not shaped like a "
                               "role's ARN, \"acs:ram::ACCOUNT:role/NAME\"",
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (src->session.len == 0) {
            ngx_str_set(&src->session, "ngx_http_idv");
        }

        if (!ngx_http_idv_creds_name(&src->session, 2, 64)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": \"session=\" takes 2 to 64 letters, "
                               "digits, \".\", \"@\", \"-\" or \"_\"",
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

        src->duration.data = ngx_pnalloc(cf->pool, NGX_TIME_T_LEN);
        if (src->duration.data == NULL) {
            return NGX_CONF_ERROR;
        }

        src->duration.len = ngx_sprintf(src->duration.data, "%T", duration)
                            - src->duration.data;
    }

    if (type == NGX_HTTP_IDV_CREDS_OIDC) {
        if (src->provider_arn.len == 0 || src->token_file.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V oidc\" needs \"provider_arn=ARN\" and "
                               "\"token_file=FILE\" (or "
                               "ALIBABA_CLOUD_OIDC_PROVIDER_ARN and "
                               "ALIBABA_CLOUD_OIDC_TOKEN_FILE)", &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (!ngx_http_idv_creds_arn(&src->provider_arn, "oidc-provider")) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": \"provider_arn=\" is not shaped like "
                               "an OIDC provider's ARN, "
                               "\"acs:ram::ACCOUNT:oidc-provider/NAME\"",
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

        if (ngx_conf_full_name(cf->cycle, &src->token_file, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        /* opened by name: a C string */

        p = ngx_pnalloc(cf->pool, src->token_file.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(p, src->token_file.data, src->token_file.len) = '\0';
        src->token_file.data = p;

        /* readable now; read again for each exchange (it is rotated) */

        if (ngx_http_idv_creds_read_file(cf->temp_pool, cf->log,
                                         &src->token_file, &token)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": \"token_file=%V\" cannot be read, or "
                               "holds no token", &cmd->name,
                               &src->token_file);
            return NGX_CONF_ERROR;
        }

        ngx_explicit_memzero(token.data, token.len);
    }

    /*
     * The zone's name stands for the source: the same source anywhere in
     * the configuration shares one zone, and a reload keeps its
     * credentials; another source starts empty.
     */

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, (u_char *) ngx_http_idv_creds_types[type],
                     ngx_strlen(ngx_http_idv_creds_types[type]));
    ngx_crc32_update(&crc, src->pass.data, src->pass.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->role.data, src->role.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->role_arn.data, src->role_arn.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->provider_arn.data, src->provider_arn.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->session.data, src->session.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->token_file.data, src->token_file.len);
    ngx_crc32_update(&crc, (u_char *) "\n", 1);
    ngx_crc32_update(&crc, src->duration.data, src->duration.len);
    ngx_crc32_final(crc);

    len = sizeof("idv_credentials__00000000") - 1 + 16;

    name.data = ngx_pnalloc(cf->pool, len);
    if (name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    name.len = ngx_sprintf(name.data, "idv_credentials_%s_%08xD",
                           ngx_http_idv_creds_types[type], crc)
               - name.data;

    zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                 &ngx_http_idv_module);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->data) {
        /* the same source again: one object, one zone */
        lcf->source = zone->data;
        return NGX_CONF_OK;
    }

    zone->init = ngx_http_idv_creds_init_zone;
    zone->data = src;

    src->shm_zone = zone;

    len = cf->conf_file->file.name.len + 1 + NGX_INT_T_LEN;

    src->where.data = ngx_pnalloc(cf->pool, len);
    if (src->where.data == NULL) {
        return NGX_CONF_ERROR;
    }

    src->where.len = ngx_sprintf(src->where.data, "%V:%ui",
                                 &cf->conf_file->file.name,
                                 cf->conf_file->line)
                     - src->where.data;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_module);

    slot = ngx_array_push(&imcf->sources);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = src;
    lcf->source = src;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" for \"%V %V\": it takes "
                       "%s", &value[i], &cmd->name, &value[1],
                       type == NGX_HTTP_IDV_CREDS_ECS
                       ? "pass=URI [role=NAME]"
                       : type == NGX_HTTP_IDV_CREDS_OIDC
                       ? "pass=URI role_arn=ARN provider_arn=ARN "
                         "token_file=FILE [session=NAME] [duration=TIME]"
                       : "pass=URI role_arn=ARN [session=NAME] "
                         "[duration=TIME]");
    return NGX_CONF_ERROR;
}


/* acs:ram::ACCOUNT:KIND/NAME */

static ngx_uint_t
ngx_http_idv_creds_arn(ngx_str_t *arn, const char *kind)
{
    u_char  *p, *last;
    size_t   len;

    p = arn->data;
    last = p + arn->len;

    if (arn->len < sizeof("acs:ram::") - 1
        || ngx_strncmp(p, "acs:ram::", sizeof("acs:ram::") - 1) != 0)
    {
        return 0;
    }

    p += sizeof("acs:ram::") - 1;

    if (p == last || *p < '0' || *p > '9') {
        return 0;
    }

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    len = ngx_strlen(kind);

    if (last - p < (ssize_t) len + 3 || *p++ != ':'
        || ngx_strncmp(p, kind, len) != 0 || p[len] != '/')
    {
        return 0;
    }

    for (p += len + 1; p < last; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
              || *p == '_' || *p == '@' || *p == '/'))
        {
            return 0;
        }
    }

    return p[-1] != '/';
}


/* a role or session name: letters, digits, ".", "@", "-", "_" */

static ngx_uint_t
ngx_http_idv_creds_name(ngx_str_t *s, size_t min, size_t max)
{
    size_t  i;
    u_char  c;

    if (s->len < min || s->len > max) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'
              || c == '@'))
        {
            return 0;
        }
    }

    return 1;
}


/* a reload keeps the zone, and with it valid credentials */

static ngx_int_t
ngx_http_idv_creds_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_creds_t  *osrc = data;

    ngx_http_idv_creds_t  *src;

    src = shm_zone->data;
    src->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (osrc) {
        src->sh = osrc->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        src->sh = src->shpool->data;
        return NGX_OK;
    }

    src->sh = ngx_slab_calloc(src->shpool,
                              sizeof(ngx_http_idv_creds_shctx_t));
    if (src->sh == NULL) {
        return NGX_ERROR;
    }

    src->shpool->data = src->sh;

    return NGX_OK;
}


/*
 * Merge time, for a location that signs.  A source of ecs_ram_role or
 * oidc needs nothing else; assume_role signs its STS call with the
 * level's long-lived key (or the environment's).
 */

ngx_int_t
ngx_http_idv_credentials_resolve(ngx_conf_t *cf,
    ngx_http_idv_loc_conf_t *conf, const char *lack)
{
    char                  *id, *secret;
    ngx_str_t              name;
    ngx_http_idv_creds_t  *src;

    src = conf->source;

    if (src && src->type != NGX_HTTP_IDV_CREDS_ASSUME) {
        return NGX_OK;
    }

    if (conf->access_key_id.data == NULL) {
        id = getenv("ALIBABA_CLOUD_ACCESS_KEY_ID");
        secret = getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET");

        if (id == NULL || *id == '\0' || secret == NULL || *secret == '\0') {

            if (src) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: \"idv_credentials_source "
                                   "assume_role\" (%V) signs its STS call "
                                   "with a long-lived key: set "
                                   "\"idv_access_key_id\" and "
                                   "\"idv_access_key_secret\", "
                                   "\"idv_credentials\", or "
                                   "ALIBABA_CLOUD_ACCESS_KEY_ID and "
                                   "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                                   ngx_http_idv_conf_where(cf), &src->where);
                return NGX_ERROR;
            }

            if (getenv("ALIBABA_CLOUD_ROLE_ARN")
                || getenv("ALIBABA_CLOUD_ECS_METADATA"))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: the environment names a RAM role "
                                   "(ALIBABA_CLOUD_ROLE_ARN or "
                                   "ALIBABA_CLOUD_ECS_METADATA): declare "
                                   "\"idv_credentials_source oidc|"
                                   "assume_role|ecs_ram_role pass=URI\" for "
                                   "the gateway to reach STS or the "
                                   "metadata service",
                                   ngx_http_idv_conf_where(cf));
                return NGX_ERROR;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V%s: set \"idv_credentials_source\", "
                               "\"idv_access_key_id\" and "
                               "\"idv_access_key_secret\", "
                               "\"idv_credentials\", or the environment "
                               "variables ALIBABA_CLOUD_ACCESS_KEY_ID and "
                               "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                               ngx_http_idv_conf_where(cf), lack);
            return NGX_ERROR;
        }

        name.data = (u_char *) id;
        name.len = ngx_strlen(id);

        conf->access_key_id.data = ngx_pstrdup(cf->pool, &name);
        conf->access_key_id.len = name.len;

        name.data = (u_char *) secret;
        name.len = ngx_strlen(secret);

        conf->access_key_secret.data = ngx_pstrdup(cf->pool, &name);
        conf->access_key_secret.len = name.len;

        if (conf->access_key_id.data == NULL
            || conf->access_key_secret.data == NULL)
        {
            return NGX_ERROR;
        }

        ngx_str_set(&conf->credentials, "the environment");
    }

    if (src == NULL) {
        return NGX_OK;
    }

    if (src->key_id.data == NULL) {
        src->key_id = conf->access_key_id;
        src->key_secret = conf->access_key_secret;
        return NGX_OK;
    }

    if (src->key_id.len != conf->access_key_id.len
        || src->key_secret.len != conf->access_key_secret.len
        || !ngx_http_idv_memeq(src->key_id.data, conf->access_key_id.data,
                               src->key_id.len)
        || !ngx_http_idv_memeq(src->key_secret.data,
                               conf->access_key_secret.data,
                               src->key_secret.len))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_credentials_source assume_role\" (%V) "
                           "is used with two different long-lived keys; "
                           "declare it where its key is set",
                           ngx_http_idv_conf_where(cf), &src->where);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_idv_credentials_assume(ngx_http_idv_creds_t *src)
{
    return src->type == NGX_HTTP_IDV_CREDS_ASSUME;
}


ngx_int_t
ngx_http_idv_credentials_init(ngx_conf_t *cf)
{
    ngx_http_idv_main_conf_t  *imcf;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_module);

    if (imcf->sources.nelts == 0) {
        return NGX_OK;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_PREPARE,
                                    ngx_http_idv_creds_handler);
}


/*
 * PREPARE, before each signed call: the current credentials into
 * ctx->key, after a fetch of new ones if this request's turn has come.
 */

static ngx_int_t
ngx_http_idv_creds_handler(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_pool_cleanup_t        *cln;
    ngx_http_idv_creds_req_t  *cr;

    if (ctx->conf->source == NULL) {
        return NGX_DECLINED;
    }

    cr = ctx->creds;

    if (cr == NULL) {
        cr = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_creds_req_t));
        cln = ngx_pool_cleanup_add(r->pool, 0);

        if (cr == NULL || cln == NULL) {
            return NGX_ERROR;
        }

        cr->src = ctx->conf->source;
        cr->wait.handler = ngx_http_idv_creds_wait_handler;
        cr->wait.data = r;
        cr->wait.log = r->connection->log;

        cln->handler = ngx_http_idv_creds_cleanup;
        cln->data = cr;

        ctx->creds = cr;
    }

    switch (cr->step) {

    case NGX_HTTP_IDV_CREDS_IDLE:
    case NGX_HTTP_IDV_CREDS_WAIT:
        cr->step = NGX_HTTP_IDV_CREDS_IDLE;
        return ngx_http_idv_creds_take(r, ctx, cr);

    default:
        /* a subrequest of the fetch is done */

        if (!ctx->done) {
            return NGX_AGAIN;
        }

        rc = ngx_http_idv_creds_next(r, ctx, cr);

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        /* the fetch's answers are not the call's: nothing of them stays */

        cr->step = NGX_HTTP_IDV_CREDS_IDLE;
        ctx->response = NULL;
        ctx->upstream_status = 0;
        ctx->upstream_time = 0;
        ctx->failed = 0;
        ctx->too_large = 0;

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_idv_creds_take(r, ctx, cr);
    }
}


static ngx_int_t
ngx_http_idv_creds_take(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_creds_req_t *cr)
{
    u_char                      *p;
    time_t                       now;
    ngx_int_t                    rc;
    ngx_str_t                    retry = ngx_string("1");
    ngx_uint_t                   valid, fetch, fetching;
    ngx_http_idv_creds_t        *src;
    ngx_http_idv_creds_shctx_t  *sh;

    src = cr->src;
    sh = src->sh;
    now = ngx_time();
    p = NULL;

    ngx_shmtx_lock(&src->shpool->mutex);

    valid = (sh->expires - now > NGX_HTTP_IDV_CREDS_MARGIN);
    fetching = (sh->claim > now);

    fetch = (!valid || sh->expires - now < NGX_HTTP_IDV_CREDS_EARLY)
            && !fetching && now >= sh->retry && !cr->tried;

    if (fetch) {
        sh->claim = now + NGX_HTTP_IDV_CREDS_CLAIM;
        cr->claimed = 1;
        cr->tried = 1;

    } else if (valid) {
        p = ngx_pnalloc(r->pool, sh->id_len + sh->secret_len
                                 + sh->token_len + 1);

        if (p) {
            ctx->key.id.data = p;
            ctx->key.id.len = sh->id_len;
            p = ngx_cpymem(p, sh->id, sh->id_len);

            ctx->key.secret.data = p;
            ctx->key.secret.len = sh->secret_len;
            p = ngx_cpymem(p, sh->secret, sh->secret_len);

            ctx->key.token.data = p;
            ctx->key.token.len = sh->token_len;
            p = ngx_http_idv_cpymem(p, sh->token, sh->token_len);
        }
    }

    ngx_shmtx_unlock(&src->shpool->mutex);

    if (fetch) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "idv: fetching temporary credentials (%s)",
                       ngx_http_idv_creds_types[src->type]);

        cr->step = (src->type == NGX_HTTP_IDV_CREDS_ECS)
                   ? NGX_HTTP_IDV_CREDS_MD_TOKEN : NGX_HTTP_IDV_CREDS_STS;

        rc = ngx_http_idv_creds_send(r, ctx, cr);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* the fetch failed before it started: as any failed fetch */
        cr->step = NGX_HTTP_IDV_CREDS_IDLE;

        return ngx_http_idv_creds_take(r, ctx, cr);
    }

    if (valid) {
        return (p == NULL) ? NGX_ERROR : NGX_OK;
    }

    if (fetching) {
        /* the first credentials are on their way: wait for them */
        cr->step = NGX_HTTP_IDV_CREDS_WAIT;
        ngx_add_timer(&cr->wait, NGX_HTTP_IDV_CREDS_POLL);
        return NGX_AGAIN;
    }

    if (ngx_http_idv_set_header(r, "Retry-After", &retry, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_idv_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                              "Gateway.CredentialsUnavailable",
                              "The gateway has no valid credentials to sign "
                              "with; the request was not sent");
}


static void
ngx_http_idv_creds_wait_handler(ngx_event_t *ev)
{
    ngx_http_idv_resume(ev->data);
}


/* a request that ends during its fetch lets another one fetch */

static void
ngx_http_idv_creds_cleanup(void *data)
{
    ngx_http_idv_creds_req_t *cr = data;

    if (cr->wait.timer_set) {
        ngx_del_timer(&cr->wait);
    }

    if (cr->claimed) {
        ngx_shmtx_lock(&cr->src->shpool->mutex);
        cr->src->sh->claim = 0;
        ngx_shmtx_unlock(&cr->src->shpool->mutex);
        cr->claimed = 0;
    }
}


/* the subrequest of the current step */

static ngx_int_t
ngx_http_idv_creds_send(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_creds_req_t *cr)
{
    u_char                *p;
    ngx_str_t              uri, args, body;
    ngx_http_idv_creds_t  *src;

    static ngx_str_t  token_path = ngx_string("/latest/api/token");
    static ngx_str_t  creds_path =
        ngx_string("/latest/meta-data/ram/security-credentials/");

    src = cr->src;

    ngx_str_null(&args);
    ngx_str_null(&body);

    switch (cr->step) {

    case NGX_HTTP_IDV_CREDS_MD_TOKEN:
        uri.len = src->pass.len + token_path.len;
        break;

    case NGX_HTTP_IDV_CREDS_MD_ROLE:
    case NGX_HTTP_IDV_CREDS_MD_CREDS:
        uri.len = src->pass.len + creds_path.len + cr->role.len;
        break;

    default: /* NGX_HTTP_IDV_CREDS_STS */

        if (ngx_http_idv_creds_sts_args(r, src, &args, &body) != NGX_OK) {
            ngx_http_idv_creds_failed(r, cr, "its request could not be "
                                      "made", 0);
            return NGX_DECLINED;
        }

        return ngx_http_idv_creds_call(r, ctx, cr, &src->pass, &args, &body,
                                       NGX_HTTP_POST);
    }

    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    /* a pass location "/x/" gives "/x//latest/...": no doubled slash */

    p = ngx_cpymem(uri.data, src->pass.data, src->pass.len);

    if (p[-1] == '/') {
        p--;
    }

    if (cr->step == NGX_HTTP_IDV_CREDS_MD_TOKEN) {
        p = ngx_cpymem(p, token_path.data, token_path.len);

        uri.len = p - uri.data;

        return ngx_http_idv_creds_call(r, ctx, cr, &uri, &args, &body,
                                       NGX_HTTP_PUT);
    }

    p = ngx_cpymem(p, creds_path.data, creds_path.len);

    if (cr->step == NGX_HTTP_IDV_CREDS_MD_CREDS) {
        p = ngx_cpymem(p, cr->role.data, cr->role.len);
    }

    uri.len = p - uri.data;

    return ngx_http_idv_creds_call(r, ctx, cr, &uri, &args, &body,
                                   NGX_HTTP_GET);
}


static ngx_int_t
ngx_http_idv_creds_call(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_creds_req_t *cr, ngx_str_t *uri, ngx_str_t *args,
    ngx_str_t *body, ngx_uint_t method)
{
    ngx_str_t            form = ngx_string("application/x-www-form-urlencoded");
    ngx_list_t          *headers;
    ngx_http_request_t  *sr;

    sr = ngx_http_idv_subrequest(r, ctx, uri, args, body,
                                 body->len ? &form : NULL);
    if (sr == NULL) {
        return NGX_ERROR;
    }

    headers = &sr->headers_in.headers;

    if (method == NGX_HTTP_PUT) {
        sr->method = NGX_HTTP_PUT;
        sr->method_name = ngx_http_idv_creds_put;

        if (ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_METADATA_TTL,
                                     (u_char *) NGX_HTTP_IDV_METADATA_TTL,
                                     sizeof(NGX_HTTP_IDV_METADATA_TTL) - 1)
            == NULL)
        {
            return NGX_ERROR;
        }

    } else if (method == NGX_HTTP_GET) {
        sr->method = NGX_HTTP_GET;
        sr->method_name = ngx_http_idv_creds_get;

        if (ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_METADATA_TOKEN,
                                     cr->session.data, cr->session.len)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    return NGX_AGAIN;
}


/*
 * The STS call.  AssumeRole is an RPC call signed with V1 by the
 * long-lived key; AssumeRoleWithOIDC is not signed, the OIDC token (read
 * again each time: Kubernetes rotates it) proves who asks.  The system
 * parameters go in the query, the others in a form body.
 */

static ngx_int_t
ngx_http_idv_creds_sts_args(ngx_http_request_t *r, ngx_http_idv_creds_t *src,
    ngx_str_t *args, ngx_str_t *body)
{
    u_char                *p, *ts;
    size_t                 len;
    ngx_str_t              token;
    ngx_uint_t             i, n;
    ngx_http_idv_sign_t    s;
    ngx_http_idv_param_t   prm[5];

    ts = ngx_http_idv_sign_time(r->pool);
    if (ts == NULL) {
        return NGX_ERROR;
    }

    n = 0;

#define ngx_http_idv_creds_param(k, v)                                       \
    prm[n].key.data = (u_char *) k;                                          \
    prm[n].key.len = sizeof(k) - 1;                                          \
    prm[n].value.data = (v)->data;                                           \
    prm[n].value.len = (v)->len;                                             \
    prm[n].body = 1;                                                         \
    prm[n].pii = 1;                                                          \
    prm[n].base64 = 0;                                                       \
    n++

    ngx_http_idv_creds_param("DurationSeconds", &src->duration);

    if (src->type == NGX_HTTP_IDV_CREDS_OIDC) {
        ngx_http_idv_creds_param("OIDCProviderArn", &src->provider_arn);

        if (ngx_http_idv_creds_read_file(r->pool, r->connection->log,
                                         &src->token_file, &token)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_idv_creds_param("OIDCToken", &token);
    }

    ngx_http_idv_creds_param("RoleArn", &src->role_arn);
    ngx_http_idv_creds_param("RoleSessionName", &src->session);

#undef ngx_http_idv_creds_param

    if (src->type == NGX_HTTP_IDV_CREDS_ASSUME) {
        ngx_memzero(&s, sizeof(ngx_http_idv_sign_t));

        s.algorithm = NGX_HTTP_IDV_SIGN_V1;
        s.access_key_id.data = src->key_id.data;
        s.access_key_id.len = src->key_id.len;
        s.access_key_secret.data = src->key_secret.data;
        s.access_key_secret.len = src->key_secret.len;
        s.action.data = (u_char *) "AssumeRole";
        s.action.len = sizeof("AssumeRole") - 1;
        s.version.data = (u_char *) NGX_HTTP_IDV_STS_VERSION;
        s.version.len = sizeof(NGX_HTTP_IDV_STS_VERSION) - 1;
        s.timestamp.data = ts;
        s.timestamp.len = NGX_HTTP_IDV_TIMESTAMP_LEN;
        s.nonce.data = ts + NGX_HTTP_IDV_TIMESTAMP_LEN;
        s.nonce.len = 32;
        s.params = (void *) prm;
        s.nparams = n;
        s.alloc = ngx_http_idv_alloc;
        s.alloc_data = r->pool;

        if (ngx_http_idv_sign(&s) != 0) {
            return NGX_ERROR;
        }

        args->data = s.query.data;
        args->len = s.query.len;
        body->data = s.body.data;
        body->len = s.body.len;

        return NGX_OK;
    }

    /* AssumeRoleWithOIDC */

    len = sizeof("Action=AssumeRoleWithOIDC&Format=JSON&Version="
                 NGX_HTTP_IDV_STS_VERSION "&Timestamp=") - 1
          + 3 * NGX_HTTP_IDV_TIMESTAMP_LEN;

    args->data = ngx_pnalloc(r->pool, len);
    if (args->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(args->data, "Action=AssumeRoleWithOIDC&Format=JSON"
                   "&Version=" NGX_HTTP_IDV_STS_VERSION "&Timestamp=",
                   sizeof("Action=AssumeRoleWithOIDC&Format=JSON&Version="
                          NGX_HTTP_IDV_STS_VERSION "&Timestamp=") - 1);
    p = ngx_http_idv_pct_encode(p, ts, NGX_HTTP_IDV_TIMESTAMP_LEN);

    args->len = p - args->data;

    len = 0;

    for (i = 0; i < n; i++) {
        len += prm[i].key.len + 2
               + ngx_http_idv_pct_encoded_len(prm[i].value.data,
                                              prm[i].value.len);
    }

    body->data = ngx_pnalloc(r->pool, len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = body->data;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_cpymem(p, prm[i].key.data, prm[i].key.len);
        *p++ = '=';
        p = ngx_http_idv_pct_encode(p, prm[i].value.data, prm[i].value.len);
    }

    body->len = p - body->data;

    ngx_explicit_memzero(token.data, token.len);

    return NGX_OK;
}


/*
 * A subrequest of the fetch is done.  NGX_AGAIN when the next step is
 * under way, NGX_OK when the fetch is over (stored, or failed and
 * counted), NGX_ERROR for an internal failure.
 */

static ngx_int_t
ngx_http_idv_creds_next(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_creds_req_t *cr)
{
    u_char     *p, *last;
    cJSON      *root, *creds, *code;
    ngx_int_t   rc;
    ngx_buf_t  *b;
    ngx_str_t   text;

    b = ctx->response;

    if (ctx->failed || b == NULL || ctx->upstream_status != NGX_HTTP_OK) {

        if (b && cr->step == NGX_HTTP_IDV_CREDS_STS) {
            /* STS says why in its Code: not a secret */
            root = cJSON_ParseWithLength((char *) b->pos, b->last - b->pos);
            code = cJSON_GetObjectItemCaseSensitive(root, "Code");

            if (cJSON_IsString(code)) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "idv: STS answered code \"%*s\"",
                              ngx_min(ngx_strlen(code->valuestring), 64),
                              code->valuestring);
            }

            cJSON_Delete(root);
        }

        ngx_http_idv_creds_failed(r, cr, "the source answered HTTP %ui",
                                  ctx->upstream_status);
        return NGX_OK;
    }

    p = b->pos;
    last = b->last;

    switch (cr->step) {

    case NGX_HTTP_IDV_CREDS_MD_TOKEN:

        if (last == p || last - p > 1024) {
            ngx_http_idv_creds_failed(r, cr, "the metadata service gave no "
                                      "session token", 0);
            return NGX_OK;
        }

        cr->session.data = p;
        cr->session.len = last - p;

        cr->step = cr->src->role.len ? NGX_HTTP_IDV_CREDS_MD_CREDS
                                     : NGX_HTTP_IDV_CREDS_MD_ROLE;
        cr->role = cr->src->role;

        rc = ngx_http_idv_creds_send(r, ctx, cr);
        return (rc == NGX_DECLINED) ? NGX_OK : rc;

    case NGX_HTTP_IDV_CREDS_MD_ROLE:

        /* the instance's role: the first line */

        text.data = p;

        while (p < last && *p != '\n' && *p != '\r') {
            p++;
        }

        text.len = p - text.data;

        if (!ngx_http_idv_creds_name(&text, 1, 64)) {
            ngx_http_idv_creds_failed(r, cr, "the instance has no RAM role "
                                      "the gateway can use", 0);
            return NGX_OK;
        }

        cr->role = text;
        cr->step = NGX_HTTP_IDV_CREDS_MD_CREDS;

        rc = ngx_http_idv_creds_send(r, ctx, cr);
        return (rc == NGX_DECLINED) ? NGX_OK : rc;

    default:
        break;
    }

    root = cJSON_ParseWithLength((char *) p, last - p);

    if (cr->step == NGX_HTTP_IDV_CREDS_STS) {
        creds = cJSON_GetObjectItemCaseSensitive(root, "Credentials");

    } else {
        creds = root;
        code = cJSON_GetObjectItemCaseSensitive(root, "Code");

        if (cJSON_IsString(code)
            && ngx_strcmp(code->valuestring, "Success") != 0)
        {
            creds = NULL;
        }
    }

    rc = ngx_http_idv_creds_store(r, cr, creds);

    if (root) {
        cJSON_Delete(root);
    }

    /* the secret stays nowhere but in the zone */
    ngx_explicit_memzero(b->pos, b->last - b->pos);

    return (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_idv_creds_store(ngx_http_request_t *r, ngx_http_idv_creds_req_t *cr,
    cJSON *creds)
{
    time_t                       expires, now;
    size_t                       id_len, secret_len, token_len;
    cJSON                       *id, *secret, *token, *expiration;
    ngx_http_idv_creds_t        *src;
    ngx_http_idv_creds_shctx_t  *sh;

    src = cr->src;
    sh = src->sh;

    id = cJSON_GetObjectItemCaseSensitive(creds, "AccessKeyId");
    secret = cJSON_GetObjectItemCaseSensitive(creds, "AccessKeySecret");
    token = cJSON_GetObjectItemCaseSensitive(creds, "SecurityToken");
    expiration = cJSON_GetObjectItemCaseSensitive(creds, "Expiration");

    if (!cJSON_IsString(id) || !cJSON_IsString(secret)
        || !cJSON_IsString(token) || !cJSON_IsString(expiration))
    {
        ngx_http_idv_creds_failed(r, cr, "its answer has no credentials", 0);
        return NGX_DECLINED;
    }

    id_len = ngx_strlen(id->valuestring);
    secret_len = ngx_strlen(secret->valuestring);
    token_len = ngx_strlen(token->valuestring);

    if (id_len == 0 || id_len > NGX_HTTP_IDV_CREDS_ID_MAX
        || secret_len == 0 || secret_len > NGX_HTTP_IDV_CREDS_SECRET_MAX
        || token_len == 0 || token_len > NGX_HTTP_IDV_CREDS_TOKEN_MAX)
    {
        ngx_http_idv_creds_failed(r, cr, "its credentials are empty or too "
                                  "long", 0);
        return NGX_DECLINED;
    }

    expires = ngx_http_idv_creds_parse_time(expiration->valuestring);
    now = ngx_time();

    if (expires == (time_t) NGX_ERROR
        || expires - now <= NGX_HTTP_IDV_CREDS_MARGIN)
    {
        ngx_http_idv_creds_failed(r, cr, "its credentials have expired, or "
                                  "their Expiration is not a time", 0);
        return NGX_DECLINED;
    }

    ngx_shmtx_lock(&src->shpool->mutex);

    sh->id_len = id_len;
    sh->secret_len = secret_len;
    sh->token_len = token_len;
    ngx_memcpy(sh->id, id->valuestring, id_len);
    ngx_memcpy(sh->secret, secret->valuestring, secret_len);
    ngx_memcpy(sh->token, token->valuestring, token_len);
    sh->expires = expires;
    sh->claim = 0;
    sh->retry = 0;
    sh->refreshes++;

    ngx_shmtx_unlock(&src->shpool->mutex);

    cr->claimed = 0;

    ngx_explicit_memzero(secret->valuestring, secret_len);
    ngx_explicit_memzero(token->valuestring, token_len);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "idv: temporary credentials from %s (%V) refreshed, "
                  "valid for %T s", ngx_http_idv_creds_types[src->type],
                  &src->where, expires - now);

    return NGX_OK;
}


static void
ngx_http_idv_creds_failed(ngx_http_request_t *r, ngx_http_idv_creds_req_t *cr,
    const char *why, ngx_uint_t status)
{
    u_char                *p;
    ngx_http_idv_creds_t  *src;
    u_char                 text[128];

    src = cr->src;

    ngx_shmtx_lock(&src->shpool->mutex);

    src->sh->claim = 0;
    src->sh->retry = ngx_time() + NGX_HTTP_IDV_CREDS_BACKOFF;
    src->sh->failures++;

    ngx_shmtx_unlock(&src->shpool->mutex);

    cr->claimed = 0;

    p = ngx_snprintf(text, sizeof(text), why, status);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "idv: temporary credentials from %s (%V) could not be "
                  "fetched: %*s; the current ones, if still valid, are used",
                  ngx_http_idv_creds_types[src->type], &src->where,
                  p - text, text);
}


/* "YYYY-MM-DDTHH:MM:SSZ" as STS and the metadata service write it */

static time_t
ngx_http_idv_creds_parse_time(const char *s)
{
    ngx_int_t   v[6];
    ngx_uint_t  i, j, y, m;
    time_t      days;

    static const char  *fmt = "dddd-dd-ddTdd:dd:ddZ";

    if (ngx_strlen(s) != 20) {
        return NGX_ERROR;
    }

    for (i = 0; i < 20; i++) {
        if (fmt[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != fmt[i]) {
            return NGX_ERROR;
        }
    }

    for (i = 0, j = 0; j < 6; j++) {
        v[j] = 0;

        while (s[i] >= '0' && s[i] <= '9') {
            v[j] = v[j] * 10 + (s[i++] - '0');
        }

        i++;
    }

    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23
        || v[4] > 59 || v[5] > 60)
    {
        return NGX_ERROR;
    }

    /* days since the epoch of a proleptic Gregorian date */

    y = v[0];
    m = v[1];

    if (m <= 2) {
        y--;
        m += 12;
    }

    days = (time_t) (365 * y + y / 4 - y / 100 + y / 400
                     + (153 * (m - 3) + 2) / 5 + v[2])
           - 719469;

    return days * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
}


/* the OIDC token file: read whole, blanks at the end trimmed */

static ngx_int_t
ngx_http_idv_creds_read_file(ngx_pool_t *pool, ngx_log_t *log,
    ngx_str_t *name, ngx_str_t *out)
{
    u_char           *p;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "idv: the OIDC token file \"%V\" cannot be opened",
                      name);
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));

    file.fd = fd;
    file.name = *name;
    file.log = log;

    n = NGX_ERROR;
    p = NULL;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) > 0
        && ngx_file_size(&fi) <= NGX_HTTP_IDV_CREDS_OIDC_MAX)
    {
        p = ngx_pnalloc(pool, (size_t) ngx_file_size(&fi));

        if (p) {
            n = ngx_read_file(&file, p, (size_t) ngx_file_size(&fi), 0);
        }
    }

    (void) ngx_close_file(fd);

    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'
                     || p[n - 1] == ' ' || p[n - 1] == '\t'))
    {
        n--;
    }

    if (n <= 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "idv: the OIDC token file \"%V\" is empty, too large "
                      "or unreadable", name);
        return NGX_ERROR;
    }

    out->data = p;
    out->len = n;

    return NGX_OK;
}


/* metrics: refreshes, failures, and the seconds the credentials have */

size_t
ngx_http_idv_credentials_metrics_size(void)
{
    ngx_http_idv_main_conf_t  *imcf;

    imcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_idv_module);

    if (imcf == NULL) {
        return 0;
    }

    return 512 + imcf->sources.nelts * 3 * 160;
}


u_char *
ngx_http_idv_credentials_metrics(u_char *p, u_char *end)
{
    time_t                       left, now;
    ngx_uint_t                   i, f;
    ngx_http_idv_creds_t       **src;
    ngx_http_idv_main_conf_t    *imcf;
    ngx_http_idv_creds_shctx_t  *sh;

    static const char  *head[] = {
        "# HELP idv_credentials_refreshes_total Temporary credentials "
        "fetched from their source.\n"
        "# TYPE idv_credentials_refreshes_total counter\n",
        "# HELP idv_credentials_failures_total Fetches of temporary "
        "credentials that failed.\n"
        "# TYPE idv_credentials_failures_total counter\n",
        "# HELP idv_credentials_expiry_seconds Seconds until the current "
        "temporary credentials expire (0: none valid).\n"
        "# TYPE idv_credentials_expiry_seconds gauge\n"
    };

    static const char  *names[] = {
        "idv_credentials_refreshes_total", "idv_credentials_failures_total",
        "idv_credentials_expiry_seconds"
    };

    imcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_idv_module);

    if (imcf == NULL || imcf->sources.nelts == 0) {
        return p;
    }

    src = imcf->sources.elts;
    now = ngx_time();

    for (f = 0; f < 3; f++) {
        p = ngx_slprintf(p, end, "%s", head[f]);

        for (i = 0; i < imcf->sources.nelts; i++) {
            sh = src[i]->sh;

            p = ngx_slprintf(p, end, "%s{source=\"%s\",zone=\"%V\"} ",
                             names[f],
                             ngx_http_idv_creds_types[src[i]->type],
                             &src[i]->shm_zone->shm.name);

            if (f == 0) {
                p = ngx_slprintf(p, end, "%uA\n", sh->refreshes);

            } else if (f == 1) {
                p = ngx_slprintf(p, end, "%uA\n", sh->failures);

            } else {
                left = sh->expires - now;
                p = ngx_slprintf(p, end, "%T\n", left > 0 ? left : 0);
            }
        }
    }

    return p;
}
