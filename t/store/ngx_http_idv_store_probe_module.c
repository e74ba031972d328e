
/*
 * ngx_http_idv_store_probe_module: a test of the store, not a feature.
 *
 *     idv_store_probe_zone zone=NAME:SIZE;      (http, any number)
 *     location = /store { idv_store_probe; }
 *
 * GET /store?atomic&op=VERB~ZONE~KEY[~OPTION...]&op=... runs one batch
 * of the operations in order; OPTION is v=VALUE, expect=VALUE, ttl=MS,
 * delta=N, rate=N, burst=N, cost=N, keep or fill.  The answer is a line
 * "batch OK|FULL|ERROR", then a line per operation:
 * "OK|DECLINED value=... number=N age=MS".
 *
 * Loaded after ngx_http_idv_module.so, whose symbols it uses.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_idv_store.h"


#define NGX_HTTP_IDV_PROBE_MAX_OPS  32


typedef struct {
    ngx_array_t                 stores;     /* ngx_http_idv_store_t * */
} ngx_http_idv_probe_main_conf_t;


static ngx_int_t ngx_http_idv_probe_handler(ngx_http_request_t *r);
static void ngx_http_idv_probe_done(ngx_http_idv_store_batch_t *b);
static ngx_int_t ngx_http_idv_probe_send(ngx_http_request_t *r,
    ngx_http_idv_store_batch_t *first);
static ngx_int_t ngx_http_idv_probe_op(ngx_http_request_t *r,
    ngx_http_idv_store_op_t *op, u_char *p, u_char *last);
static void *ngx_http_idv_probe_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idv_probe_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_probe(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_idv_probe_commands[] = {

    { ngx_string("idv_store_probe_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_probe_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_store_probe"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idv_probe,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_store_probe_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_idv_probe_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_idv_store_probe_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_store_probe_module_ctx,  /* module context */
    ngx_http_idv_probe_commands,           /* module directives */
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


static const char  *ngx_http_idv_probe_verbs[] = {
    "", "get", "add", "set", "incr", "delete", "cas", "bucket", "check", NULL
};


static ngx_int_t
ngx_http_idv_probe_handler(ngx_http_request_t *r)
{
    u_char                      *p, *last, *next;
    ngx_int_t                    rc;
    ngx_uint_t                   forget;
    ngx_http_idv_store_op_t     *ops;
    ngx_http_idv_store_batch_t  *first, *batch;

    ops = ngx_pcalloc(r->pool,
                      NGX_HTTP_IDV_PROBE_MAX_OPS
                      * sizeof(ngx_http_idv_store_op_t));
    first = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_store_batch_t));

    if (ops == NULL || first == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    batch = first;
    batch->ops = ops;
    batch->pool = r->pool;
    batch->log = r->connection->log;

    forget = 0;

    p = r->args.data;
    last = p + r->args.len;

    for ( /* void */ ; p < last; p = next + 1) {
        next = ngx_strlchr(p, last, '&');
        if (next == NULL) {
            next = last;
        }

        if (next - p == 6 && ngx_strncmp(p, "atomic", 6) == 0) {
            batch->atomic = 1;
            continue;
        }

        if (next - p == 6 && ngx_strncmp(p, "forget", 6) == 0) {
            /* fire and forget: no handler; reported at once */
            forget = 1;
            continue;
        }

        if (next - p == 4 && ngx_strncmp(p, "then", 4) == 0) {
            /* the next batch of a group */
            batch->next = ngx_pcalloc(r->pool,
                                      sizeof(ngx_http_idv_store_batch_t));
            if (batch->next == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ops += batch->nops;
            batch = batch->next;
            batch->ops = ops;
            batch->pool = r->pool;
            batch->log = r->connection->log;
            continue;
        }

        if (next - p < 3 || ngx_strncmp(p, "op=", 3) != 0
            || ops + batch->nops
               == first->ops + NGX_HTTP_IDV_PROBE_MAX_OPS)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

        if (ngx_http_idv_probe_op(r, &ops[batch->nops], p + 3, next)
            != NGX_OK)
        {
            return NGX_HTTP_BAD_REQUEST;
        }

        batch->nops++;
    }

    first->data = r;

    if (!forget) {
        /* a backend that answers later calls back */
        first->handler = ngx_http_idv_probe_done;
    }

    rc = first->next ? ngx_http_idv_store_run_group(first)
                     : ngx_http_idv_store_run(first);

    if (rc == NGX_AGAIN) {
        r->main->count++;
        return NGX_DONE;
    }

    return ngx_http_idv_probe_send(r, first);
}


static void
ngx_http_idv_probe_done(ngx_http_idv_store_batch_t *b)
{
    ngx_http_request_t  *r = b->data;

    ngx_connection_t  *c;

    c = r->connection;

    /* the request may be freed by then */
    ngx_http_finalize_request(r, ngx_http_idv_probe_send(r, b));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_idv_probe_send(ngx_http_request_t *r,
    ngx_http_idv_store_batch_t *first)
{
    size_t                       size;
    ngx_int_t                    rc;
    ngx_buf_t                   *b;
    ngx_uint_t                   i;
    ngx_chain_t                  out;
    ngx_http_idv_store_op_t     *ops;
    ngx_http_idv_store_batch_t  *batch;

    size = 0;

    for (batch = first; batch; batch = batch->next) {
        size += sizeof("batch SKIPPED\n");

        for (i = 0; i < batch->nops; i++) {
            size += sizeof("DECLINED value= number= age=\n")
                    + 2 * NGX_INT64_LEN + batch->ops[i].result.len;
        }
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* one "batch" line and its operations per batch of the group */

    for (batch = first; batch; batch = batch->next) {
        rc = batch->rc;
        ops = batch->ops;

        b->last = ngx_sprintf(b->last, "batch %s\n",
                              batch->skipped ? "SKIPPED"
                              : rc == NGX_OK ? "OK"
                              : rc == NGX_HTTP_IDV_STORE_FULL ? "FULL"
                              : "ERROR");

        for (i = 0; rc == NGX_OK && i < batch->nops; i++) {
            b->last = ngx_sprintf(b->last,
                                  "%s value=%V number=%L age=%M\n",
                                  ops[i].rc == NGX_OK ? "OK" : "DECLINED",
                                  &ops[i].result, ops[i].number,
                                  ops[i].age);
        }
    }

    b->last_buf = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* VERB~ZONE~KEY[~OPTION...] */

static ngx_int_t
ngx_http_idv_probe_op(ngx_http_request_t *r, ngx_http_idv_store_op_t *op,
    u_char *p, u_char *last)
{
    u_char                           *f;
    ngx_int_t                         n;
    ngx_str_t                         field[16], *v;
    ngx_uint_t                        i, nfields;
    ngx_http_idv_store_t            **st;
    ngx_http_idv_probe_main_conf_t   *pmcf;

    for (nfields = 0; p <= last && nfields < 16; nfields++) {
        f = ngx_strlchr(p, last, '~');
        if (f == NULL) {
            f = last;
        }

        field[nfields].data = p;
        field[nfields].len = f - p;
        p = f + 1;
    }

    if (nfields < 3) {
        return NGX_ERROR;
    }

    for (i = 1; ngx_http_idv_probe_verbs[i]; i++) {
        if (field[0].len == ngx_strlen(ngx_http_idv_probe_verbs[i])
            && ngx_strncmp(field[0].data, ngx_http_idv_probe_verbs[i],
                           field[0].len) == 0)
        {
            op->op = i;
        }
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_store_probe_module);
    st = pmcf->stores.elts;

    for (i = 0; i < pmcf->stores.nelts; i++) {
        if (st[i]->name.len == field[1].len
            && ngx_strncmp(st[i]->name.data, field[1].data, field[1].len)
               == 0)
        {
            op->store = st[i];
        }
    }

    op->key = field[2];

    for (i = 3; i < nfields; i++) {
        v = &field[i];

        if (v->len == 4 && ngx_strncmp(v->data, "keep", 4) == 0) {
            op->keep = 1;
            continue;
        }

        if (v->len == 4 && ngx_strncmp(v->data, "fill", 4) == 0) {
            op->fill = 1;
            continue;
        }

        if (v->len == 7 && ngx_strncmp(v->data, "present", 7) == 0) {
            op->present = 1;
            continue;
        }

        f = ngx_strlchr(v->data, v->data + v->len, '=');
        if (f == NULL) {
            return NGX_ERROR;
        }

        if (f - v->data == 1 && v->data[0] == 'v') {
            op->value.data = f + 1;
            op->value.len = v->data + v->len - (f + 1);
            continue;
        }

        if (f - v->data == 6 && ngx_strncmp(v->data, "expect", 6) == 0) {
            op->expect.data = f + 1;
            op->expect.len = v->data + v->len - (f + 1);
            continue;
        }

        n = (f[1] == '-') ? -ngx_atoi(f + 2, v->data + v->len - (f + 2))
                          : ngx_atoi(f + 1, v->data + v->len - (f + 1));

        if (f - v->data == 3 && ngx_strncmp(v->data, "ttl", 3) == 0) {
            op->ttl = (ngx_msec_t) n;

        } else if (f - v->data == 5 && ngx_strncmp(v->data, "delta", 5) == 0) {
            op->delta = n;

        } else if (f - v->data == 4 && ngx_strncmp(v->data, "rate", 4) == 0) {
            op->rate = (ngx_uint_t) n;

        } else if (f - v->data == 5 && ngx_strncmp(v->data, "burst", 5) == 0) {
            op->burst = (ngx_uint_t) n;

        } else if (f - v->data == 4 && ngx_strncmp(v->data, "cost", 4) == 0) {
            op->cost = (ngx_uint_t) n;

        } else {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void *
ngx_http_idv_probe_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idv_probe_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_probe_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->stores, cf->pool, 4, sizeof(void *))
        != NGX_OK)
    {
        return NULL;
    }

    return pmcf;
}


static char *
ngx_http_idv_probe_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_probe_main_conf_t *pmcf = conf;

    ngx_http_idv_store_t  **st;

    st = ngx_array_push(&pmcf->stores);
    if (st == NULL) {
        return NGX_CONF_ERROR;
    }

    /* read as every zone directive is */
    *st = ngx_http_idv_store_zone(cf, "probe",
                                  &ngx_http_idv_store_probe_module, NULL);
    if (*st == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_probe(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_idv_probe_handler;

    return NGX_CONF_OK;
}
