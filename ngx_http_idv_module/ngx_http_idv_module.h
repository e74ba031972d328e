
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


/* the pure core's strings share ngx_str_t's layout */
#define ngx_http_idv_ngx_str(s)        ((ngx_str_t *) (s))


#define NGX_HTTP_IDV_DEFAULT_ENDPOINT  "cloudauth-intl.cn-hongkong.aliyuncs.com"


typedef struct {
    ngx_str_t                   access_key_id;
    ngx_str_t                   access_key_secret;
    ngx_str_t                   credentials;    /* where they came from */

    ngx_str_t                   endpoint;
    ngx_str_t                   pass;
    ngx_uint_t                  signature;

    const ngx_http_idv_op_t    *op;
    ngx_str_t                   product;
    ngx_http_complex_value_t   *tenant;

    ngx_uint_t                  retries;
    ngx_msec_t                  retry_budget;

    ngx_flag_t                  expand_json;
} ngx_http_idv_loc_conf_t;


/* Result.Passed: documented as Y/N, EkycVerify's model says T/F */
#define NGX_HTTP_IDV_PASSED_UNKNOWN  0
#define NGX_HTTP_IDV_PASSED_YES      1
#define NGX_HTTP_IDV_PASSED_NO       2


/*
 * the corridor's stages; other rooms hook into CACHE and LIMIT.  The
 * cache comes first: an answer it already has spends no QPS allowance.
 */
#define NGX_HTTP_IDV_STAGE_CACHE     0
#define NGX_HTTP_IDV_STAGE_LIMIT     1
#define NGX_HTTP_IDV_STAGE_FIRST     NGX_HTTP_IDV_STAGE_CACHE
#define NGX_HTTP_IDV_STAGE_UPSTREAM  2
#define NGX_HTTP_IDV_STAGE_WAIT      3
#define NGX_HTTP_IDV_STAGE_DONE      4


typedef struct ngx_http_idv_ctx_s  ngx_http_idv_ctx_t;


/*
 * A stage hook returns NGX_OK or NGX_DECLINED to let the request go on,
 * NGX_AGAIN to suspend it (the hook's owner calls ngx_http_idv_wakeup()
 * later and the hook runs again), or the rc of a response it has sent.
 */
typedef ngx_int_t (*ngx_http_idv_stage_pt)(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);

/*
 * An answer hook sees every upstream answer before it goes to the
 * backend: json is the parsed envelope (a cJSON *), or NULL when the call
 * failed; status is what the backend will get.
 */
typedef void (*ngx_http_idv_answer_pt)(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, void *json, ngx_uint_t status);


#define NGX_HTTP_IDV_MAX_HOOKS  8

typedef struct {
    ngx_http_idv_stage_pt       stage[NGX_HTTP_IDV_STAGE_UPSTREAM];

    /*
     * run before each upstream call is signed: may add parameters, or
     * answer the request itself (return its rc) so that no call is made
     */
    ngx_http_idv_stage_pt       prepare[NGX_HTTP_IDV_MAX_HOOKS];
    ngx_uint_t                  nprepares;

    ngx_http_idv_answer_pt      answer[NGX_HTTP_IDV_MAX_HOOKS];
    ngx_uint_t                  nanswers;

    /*
     * the body of nginx's own error page (status >= 400) in a location of
     * a room that shapes its errors differently, or NULL
     */
    ngx_buf_t                *(*error_page)(ngx_http_request_t *r,
                                            ngx_uint_t status);
} ngx_http_idv_hooks_t;


struct ngx_http_idv_ctx_s {
    ngx_http_idv_loc_conf_t    *conf;
    ngx_http_idv_req_t          req;
    ngx_uint_t                  stage;
    ngx_str_t                   tenant;

    /* private state of the rooms that hook in */
    void                       *limit;
    void                       *cache;

    ngx_event_t                 retry;          /* backoff timer */

    /*
     * when set, the answer goes to this function instead of the client
     * (the callback room confirms a callback with CheckResult this way);
     * json is the parsed envelope or NULL, and it is freed afterwards
     */
    ngx_int_t                 (*on_answer)(ngx_http_request_t *r,
                                           ngx_http_idv_ctx_t *ctx,
                                           void *json, ngx_uint_t status);
    void                       *callback;

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

    unsigned                    done:1;
    unsigned                    failed:1;
    unsigned                    responded:1;
    unsigned                    replaced:1;
    unsigned                    too_large:1;
    unsigned                    cached:1;
};


extern ngx_module_t          ngx_http_idv_module;
extern ngx_http_idv_hooks_t  ngx_http_idv_hooks;


/* handler */
ngx_int_t ngx_http_idv_handler(ngx_http_request_t *r);
ngx_http_idv_ctx_t *ngx_http_idv_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_idv_read_body(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_http_idv_run(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx);
void ngx_http_idv_wakeup(ngx_http_request_t *r);
ngx_int_t ngx_http_idv_add_answer_hook(ngx_conf_t *cf,
    ngx_http_idv_answer_pt hook);
ngx_int_t ngx_http_idv_add_prepare_hook(ngx_conf_t *cf,
    ngx_http_idv_stage_pt hook);
void *ngx_http_idv_palloc(void *pool, size_t size);
void *ngx_http_idv_alloc(void *pool, size_t size);

/* upstream: sign and send the call as a subrequest */
ngx_int_t ngx_http_idv_upstream_call(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
ngx_http_request_t *ngx_http_idv_subrequest(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_str_t *uri, ngx_str_t *args,
    ngx_str_t *body, ngx_str_t *type);
ngx_int_t ngx_http_idv_upstream_capture(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_chain_t *in);
ngx_int_t ngx_http_idv_init_process_handler(ngx_cycle_t *cycle);
void ngx_http_idv_make_id(u_char *dst32);
void ngx_http_idv_log_mask(ngx_http_request_t *r);

/* envelope: answers in the API's JSON envelope */
ngx_int_t ngx_http_idv_send_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *message);
ngx_int_t ngx_http_idv_send_envelope(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, void *json, u_char *start,
    u_char *end);
ngx_int_t ngx_http_idv_set_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value, ngx_uint_t replace);
ngx_int_t ngx_http_idv_filter_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDV_MODULE_H_INCLUDED_ */
