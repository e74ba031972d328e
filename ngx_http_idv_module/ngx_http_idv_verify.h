
/*
 * ngx_http_idv_module: verification of incoming SDK requests (pure core).
 *
 * An RPC request as the official SDKs send it (V3 ACS3-HMAC-SHA256 or
 * ACS3-HMAC-SM3, or V1 HMAC-SHA1, parameters in the query string and a
 * form body) is parsed
 * into decoded parameters and the fields of its signature, and the
 * signature is recomputed with a given secret from the signer's building
 * blocks.  Failures carry the service's own status, code and message.
 */


#ifndef _NGX_HTTP_IDV_VERIFY_H_INCLUDED_
#define _NGX_HTTP_IDV_VERIFY_H_INCLUDED_


#include <time.h>

#include "ngx_http_idv_core.h"


/* the service's window for timestamps, and its memory of nonces */
#define NGX_HTTP_IDV_VERIFY_WINDOW      (15 * 60)

/* an API call has a few dozen; more is an attack on the sort */
#define NGX_HTTP_IDV_VERIFY_MAX_PARAMS  256
#define NGX_HTTP_IDV_VERIFY_MAX_SIGNED  32
#define NGX_HTTP_IDV_VERIFY_MAX_NONCE   128


typedef struct {
    ngx_http_idv_str_t          name;       /* lower case */
    ngx_http_idv_str_t          value;
} ngx_http_idv_header_t;


typedef struct {
    /* input */
    ngx_http_idv_str_t          method;     /* as sent: POST, GET */
    ngx_http_idv_str_t          path;       /* raw path, "/" for the SDKs */
    ngx_http_idv_str_t          query;      /* raw query string, no '?' */
    ngx_http_idv_str_t          body;       /* the body bytes as received */
    const ngx_http_idv_header_t  *headers;  /* every request header */
    size_t                      nheaders;
    unsigned                    form:1;     /* the body is urlencoded */
    ngx_http_idv_alloc_pt       alloc;
    void                       *alloc_data;

    /* parsed: decoded parameters, query ones first, body ones flagged */
    int                         algorithm;  /* NGX_HTTP_IDV_SIGN_V3, _V1 */
    unsigned                    sm3:1;      /* V3 with ACS3-HMAC-SM3 */
    ngx_http_idv_param_t       *params;
    size_t                      nparams;

    ngx_http_idv_str_t          access_key_id;
    ngx_http_idv_str_t          action;
    ngx_http_idv_str_t          version;
    ngx_http_idv_str_t          timestamp;
    ngx_http_idv_str_t          nonce;
    ngx_http_idv_str_t          signature;
    ngx_http_idv_str_t         *signed_headers;     /* V3: sorted names */
    size_t                      nsigned;
    time_t                      time;       /* set by verify_time() */

    /* what the signature was computed over (V3: no parameter values) */
    ngx_http_idv_str_t          string_to_sign;

    /* failure: HTTP status and the service's code and message */
    int                         status;
    const char                 *code;
    ngx_http_idv_str_t          message;
} ngx_http_idv_verify_t;


/*
 * Each returns 0, or -1 with status, code and message set (status 500
 * with code NULL when memory or the crypto library failed).
 */

/* the parameters, the signature version and its fields */
int ngx_http_idv_verify_parse(ngx_http_idv_verify_t *v);

/* the timestamp: well formed and within window seconds of now */
int ngx_http_idv_verify_time(ngx_http_idv_verify_t *v, time_t now,
    time_t window);

/* the signature and (V3) the body hash, compared in constant time */
int ngx_http_idv_verify_signature(ngx_http_idv_verify_t *v,
    const u_char *secret, size_t len);

/* 1 if the parameter belongs to the signature, not to the API call */
int ngx_http_idv_verify_system_param(const u_char *key, size_t len);

/* "YYYY-MM-DDTHH:MM:SS[.fff]Z" in UTC; 0 or -1 */
int ngx_http_idv_parse_time(const u_char *p, size_t len, time_t *t);


#endif /* _NGX_HTTP_IDV_VERIFY_H_INCLUDED_ */
