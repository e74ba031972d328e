
/*
 * ngx_http_idv_module: what the nginx-side rooms share.
 */


#ifndef _NGX_HTTP_IDV_MODULE_H_INCLUDED_
#define _NGX_HTTP_IDV_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_idv_core.h"
#include "ngx_http_idv_ops.h"
#include "ngx_http_idv_request.h"
#include "ngx_http_idv_store.h"


/*
 * copies and comparisons of strings that may be empty, and then NULL
 * (memcpy() and memcmp() must not be given NULL, even for no bytes)
 */
#define ngx_http_idv_cpymem(dst, src, n)                                     \
    ((n) ? ngx_cpymem(dst, src, n) : (u_char *) (dst))
#define ngx_http_idv_memeq(a, b, n)                                          \
    ((n) == 0 || ngx_memcmp(a, b, n) == 0)


/* the pure core's strings share ngx_str_t's layout */
#define ngx_http_idv_ngx_str(s)        ((ngx_str_t *) (s))


#define NGX_HTTP_IDV_DEFAULT_ENDPOINT  "cloudauth-intl.cn-hongkong.aliyuncs.com"

/* YYYY-MM-DDTHH:MM:SSZ */
#define NGX_HTTP_IDV_TIMESTAMP_LEN     20

/* a tenant, a MerchantBizId: longer ones are refused before anything */
#define NGX_HTTP_IDV_NAME_MAX          255


typedef struct ngx_http_idv_creds_s  ngx_http_idv_creds_t;


/* the credentials a call is signed with */

typedef struct {
    ngx_str_t                   id;
    ngx_str_t                   secret;
    ngx_str_t                   token;      /* temporary ones' SecurityToken,
                                               or empty */
} ngx_http_idv_key_t;


typedef struct {
    ngx_str_t                   access_key_id;
    ngx_str_t                   access_key_secret;
    ngx_str_t                   credentials;    /* where they came from */

    /* temporary credentials (idv_credentials_source), or NULL */
    ngx_http_idv_creds_t       *source;

    ngx_str_t                   endpoint;
    ngx_str_t                   pass;
    ngx_uint_t                  signature;

    const ngx_http_idv_op_t    *op;
    ngx_str_t                   product;
    ngx_http_complex_value_t   *tenant;

    ngx_uint_t                  retries;
    ngx_msec_t                  retry_budget;

    ngx_flag_t                  expand_json;

    ngx_uint_t                  dialect;    /* NGX_HTTP_IDV_DIALECT_* */

    /* idv_allow_param: parameters newer than the operations table */
    ngx_array_t                *allow;      /* ngx_http_idv_op_param_t */
    ngx_array_t                *allow_where;    /* ngx_str_t "FILE:LINE" */

    /*
     * nginx reports the errors of merge time at the end of the http
     * block: where the location and its keys were set, for them to say
     */
    ngx_str_t                   where;      /* location "/x" (FILE:LINE,
                                               "idv_action NAME") */
    ngx_str_t                   keys_where; /* "idv_access_key_id" at
                                               FILE:LINE */
} ngx_http_idv_loc_conf_t;


typedef struct {
    ngx_array_t                 sources;    /* ngx_http_idv_creds_t * */
    ngx_array_t                 stores;     /* ngx_http_idv_store_t * */

    /*
     * the state calls of a window of the pipeline go to the store as one
     * group (one round trip): set when the zones that answer later all
     * use one server
     */
    ngx_uint_t                  gather;
} ngx_http_idv_main_conf_t;


/* a state call gathered into its window's group, and whose it is */
typedef struct {
    ngx_http_idv_store_batch_t *batch;
    ngx_uint_t                  phase;
    ngx_uint_t                  index;
} ngx_http_idv_gathered_t;

#define NGX_HTTP_IDV_GATHER_MAX  8


/* Result.Passed: documented as Y/N, EkycVerify's model says T/F */
#define NGX_HTTP_IDV_PASSED_UNKNOWN  0
#define NGX_HTTP_IDV_PASSED_YES      1
#define NGX_HTTP_IDV_PASSED_NO       2


/*
 * The request pipeline.  Modules register handlers in phases at
 * configuration time (ngx_http_idv_add_handler); a request walks them in
 * order:
 *
 *   CHECK    local checks that charge nothing (tenancy, ...)
 *   STATE    answers the gateway already has (cached answers, single
 *            flights)
 *   CHARGE   what a request spends once it passed every check (limits)
 *   PREPARE  before each upstream call is signed (callback tokens)
 *            then the signed call, retried where safe
 *   ANSWER   the answer, whoever made it: observe and keep it
 *   DELIVER  act on it, may replace it (may start subrequests)
 *
 * A handler returns NGX_OK or NGX_DECLINED to go on; NGX_AGAIN to suspend
 * the request (its module calls ngx_http_idv_resume() later, and the same
 * handler runs again); NGX_HTTP_IDV_ANSWER once it has set the answer
 * with ngx_http_idv_error() or ngx_http_idv_reply() (the request skips to
 * the ANSWER phase); anything else (NGX_ERROR, an HTTP status) is an
 * internal failure, answered as a JSON error.  Every handler keeps its
 * request state in its own module ctx.
 */

#define NGX_HTTP_IDV_PHASE_CHECK     0
#define NGX_HTTP_IDV_PHASE_STATE     1
#define NGX_HTTP_IDV_PHASE_CHARGE    2
#define NGX_HTTP_IDV_PHASE_PREPARE   3
#define NGX_HTTP_IDV_PHASE_UPSTREAM  4     /* the core's: sign, call, wait */
#define NGX_HTTP_IDV_PHASE_ANSWER    5
#define NGX_HTTP_IDV_PHASE_DELIVER   6
#define NGX_HTTP_IDV_PHASE_SEND      7     /* the core's: render, send */
#define NGX_HTTP_IDV_PHASE_DONE      8

#define NGX_HTTP_IDV_ANSWER          1     /* see above */


/*
 * answers are rendered in the dialect of the location: the gateway's
 * envelope with a "Gateway" member, or on the SDK endpoint the service's
 * answers byte for byte (its refusals and nginx's error pages in the
 * service's error shape, the gateway's own checks in its envelope)
 */
#define NGX_HTTP_IDV_DIALECT_GATEWAY 0
#define NGX_HTTP_IDV_DIALECT_SDK     1


typedef struct ngx_http_idv_ctx_s  ngx_http_idv_ctx_t;

typedef ngx_int_t (*ngx_http_idv_handler_pt)(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);


/* what the backend will get */

typedef struct {
    ngx_uint_t                  status;
    const char                 *message;    /* an error's Message */
    u_char                     *start;      /* an envelope's bytes */
    u_char                     *end;
    void                       *json;       /* it parsed (cJSON *), or NULL:
                                               ngx_http_idv_answer_json() */
    unsigned                    error:1;    /* rendered from code, message */
    unsigned                    upstream:1; /* the service's own answer */
    unsigned                    service:1;  /* an error in the service's
                                               shape (SDK refusals) */
} ngx_http_idv_answer_t;


struct ngx_http_idv_ctx_s {
    ngx_http_idv_loc_conf_t    *conf;
    ngx_http_idv_req_t          req;
    ngx_str_t                   tenant;

    ngx_uint_t                  phase;
    ngx_uint_t                  index;      /* of the handler in the phase */

    /* the window's state calls, gathered into one group */
    ngx_http_idv_gathered_t     gathered[NGX_HTTP_IDV_GATHER_MAX];
    ngx_uint_t                  ngathered;
    ngx_uint_t                  gather_phase;   /* the window's first */
    ngx_uint_t                  gather_windows; /* those gathered (bits) */

    ngx_http_idv_answer_t       answer;

    ngx_event_t                 retry;      /* backoff timer */
    ngx_event_t                 guard;      /* the call outlives its client */

    /* temporary credentials: set before each call, and their fetch */
    ngx_http_idv_key_t          key;
    void                       *creds;

    ngx_http_request_t         *sr;
    ngx_buf_t                  *response;
    ngx_uint_t                  upstream_status;
    ngx_msec_t                  start;
    ngx_msec_t                  upstream_time;
    ngx_uint_t                  attempts;
    ngx_msec_t                  backoff;

    /* what the logs and variables may show: no PII here */
    ngx_str_t                   code;
    ngx_str_t                   request_id;
    ngx_str_t                   transaction_id;
    ngx_str_t                   merchant_biz_id;

    ngx_buf_t                  *replacement;    /* for nginx's own errors */
    ngx_uint_t                  passed;         /* NGX_HTTP_IDV_PASSED_* */

    /*
     * kept CheckResult answers (ngx_http_idv_tenancy_module keeps them
     * with their owner): answer from one if there is one; keep this
     * request's final answer for this long
     */
    ngx_msec_t                  keep_result;
    unsigned                    kept_result:1;

    unsigned                    gathering:1;
    unsigned                    group_pending:1;

    unsigned                    done:1;         /* the subrequest ended */
    unsigned                    failed:1;
    unsigned                    sent:1;         /* the answer went out */
    unsigned                    replaced:1;
    unsigned                    too_large:1;
    unsigned                    cached:1;
};


extern ngx_module_t          ngx_http_idv_module;


/* handler: the pipeline */
ngx_int_t ngx_http_idv_handler(ngx_http_request_t *r);
ngx_http_idv_ctx_t *ngx_http_idv_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_idv_read_body(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_http_idv_add_handler(ngx_conf_t *cf, ngx_uint_t phase,
    ngx_http_idv_handler_pt handler);
void ngx_http_idv_handlers_reset(void);
ngx_int_t ngx_http_idv_start(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx);
ngx_int_t ngx_http_idv_run(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx);
void ngx_http_idv_resume(ngx_http_request_t *r);
void ngx_http_idv_wait_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_idv_state_call(ngx_http_request_t *r,
    ngx_http_idv_store_batch_t *b);
void ngx_http_idv_state_forget(ngx_http_request_t *r,
    ngx_http_idv_store_op_t *op);
ngx_int_t ngx_http_idv_state_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_store_t *store, ngx_int_t rc);
void *ngx_http_idv_palloc(void *pool, size_t size);
void *ngx_http_idv_alloc(void *pool, size_t size);
/* the request model of conf's action: its row and idv_allow_param's */
void ngx_http_idv_req_init(ngx_http_request_t *r, ngx_http_idv_req_t *rq,
    ngx_http_idv_loc_conf_t *conf);

/* upstream: sign and send the call as a subrequest */
ngx_int_t ngx_http_idv_upstream_call(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
ngx_http_request_t *ngx_http_idv_subrequest(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_str_t *uri, ngx_str_t *args,
    ngx_str_t *body, ngx_str_t *type);
/* a header of a subrequest, by the key's index: NGX_HTTP_IDV_H_* */
#define NGX_HTTP_IDV_H_CONTENT_TYPE     0
#define NGX_HTTP_IDV_H_ACTION           1
#define NGX_HTTP_IDV_H_VERSION          2
#define NGX_HTTP_IDV_H_DATE             3
#define NGX_HTTP_IDV_H_NONCE            4
#define NGX_HTTP_IDV_H_CONTENT_SHA256   5
#define NGX_HTTP_IDV_H_AUTHORIZATION    6
#define NGX_HTTP_IDV_H_SECURITY_TOKEN   7
#define NGX_HTTP_IDV_H_METADATA_TTL     8
#define NGX_HTTP_IDV_H_METADATA_TOKEN   9
ngx_table_elt_t *ngx_http_idv_push_header(ngx_list_t *list, ngx_uint_t key,
    u_char *value, size_t len);
ngx_int_t ngx_http_idv_upstream_capture(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_chain_t *in);
ngx_int_t ngx_http_idv_init_process_handler(ngx_cycle_t *cycle);
void ngx_http_idv_upstream_init(void);
void ngx_http_idv_make_id(u_char *dst32);
/* NGX_HTTP_IDV_TIMESTAMP_LEN bytes of UTC time, then a 32-byte nonce */
u_char *ngx_http_idv_sign_time(ngx_pool_t *pool);
void ngx_http_idv_log_mask(ngx_http_request_t *r);

/* envelope: every answer is rendered here */
ngx_int_t ngx_http_idv_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *message);
ngx_int_t ngx_http_idv_reply(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, u_char *start, u_char *end, void *json);
/*
 * the answer as a cJSON tree (freed with the request), built the first
 * time a handler asks: the service's envelope is read without one; NULL
 * for the gateway's own errors
 */
void *ngx_http_idv_answer_json(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
ngx_int_t ngx_http_idv_send_answer(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
ngx_int_t ngx_http_idv_set_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value, ngx_uint_t replace);
ngx_int_t ngx_http_idv_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_idv_conf_where_set(ngx_conf_t *cf, ngx_uint_t args);
ngx_str_t *ngx_http_idv_conf_where(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDV_MODULE_H_INCLUDED_ */
