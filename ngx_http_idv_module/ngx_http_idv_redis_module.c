
/*
 * ngx_http_idv_redis_module: the keyed store's Redis backend.
 *
 *     idv_redis name=NAME server=HOST:PORT [password_file=FILE] [user=NAME]
 *               [db=N] [prefix=STRING] [timeout=TIME];
 *
 * and "store=redis:NAME" on a zone directive.  Every batch is one call of
 * one script (EVALSHA, EVAL when the server lost it), which runs the
 * operations as the shared memory backend does, on the server's clock.
 *
 * Each worker keeps one connection per server, on nginx's event loop:
 * non-blocking connect, commands pipelined (written here: RESP requests
 * are arrays of lengths and bytes), replies parsed with hiredis's reader,
 * in order.  A command not answered within the timeout closes the
 * connection (the replies behind it could no longer be matched); every
 * batch it carried fails, and so does every batch while the worker backs
 * off before it connects again.  A failed batch is the zone's on_error
 * policy's to settle (ngx_http_idv_store_fallback): refused, let through,
 * or run in the zone's shared memory.
 *
 * Keys reach the server hashed: SipHash-2-4-128 under a random key that
 * the first worker of any node to connect stores in the namespace
 * ("{PREFIX}:key", SET NX) and every worker reads on connecting; each
 * script checks that its caller hashed with the key the namespace holds,
 * so that a namespace emptied behind the workers' backs is noticed.
 * Every key of the namespace carries the hash tag {PREFIX}: one slot, so
 * a cluster proxy can route every script.
 */


#include <openssl/rand.h>
#include <openssl/sha.h>
#include <hiredis/hiredis.h>

#include "ngx_http_idv_module.h"
#include "ngx_http_idv_conf_file.h"
#include "ngx_http_idv_siphash.h"
#include "ngx_http_idv_store.h"


#define NGX_HTTP_IDV_REDIS_KEY_LEN      NGX_HTTP_IDV_SIPHASH_KEY_LEN
#define NGX_HTTP_IDV_REDIS_ARGS         10      /* per operation */

#define NGX_HTTP_IDV_REDIS_BACKOFF_MIN  100     /* ms */
#define NGX_HTTP_IDV_REDIS_BACKOFF_MAX  5000
#define NGX_HTTP_IDV_REDIS_LOG_EVERY    10      /* seconds between lines */

/* what a command is for */
#define NGX_HTTP_IDV_REDIS_BATCH        0
#define NGX_HTTP_IDV_REDIS_AUTH         1
#define NGX_HTTP_IDV_REDIS_SELECT       2
#define NGX_HTTP_IDV_REDIS_LOAD         3
#define NGX_HTTP_IDV_REDIS_SETKEY       4
#define NGX_HTTP_IDV_REDIS_GETKEY       5

/* a connection's state */
#define NGX_HTTP_IDV_REDIS_DOWN         0
#define NGX_HTTP_IDV_REDIS_CONNECTING   1
#define NGX_HTTP_IDV_REDIS_UP           2


typedef struct ngx_http_idv_redis_s  ngx_http_idv_redis_t;


/*
 * The reply being parsed: hiredis builds it through our functions, its
 * elements taken from here rather than allocated one by one (a script's
 * answer is a flat array of a few dozen); strings are the only
 * allocations.  Reset once a reply is handled.
 */

#define NGX_HTTP_IDV_REDIS_SLOTS  512

typedef struct {
    redisReply                  slots[NGX_HTTP_IDV_REDIS_SLOTS];
    redisReply                 *ptrs[NGX_HTTP_IDV_REDIS_SLOTS];
    ngx_uint_t                  nslots;
    ngx_uint_t                  nptrs;
} ngx_http_idv_redis_arena_t;


typedef struct {
    ngx_queue_t                 queue;
    ngx_http_idv_redis_t       *redis;
    ngx_http_idv_store_batch_t *batch;      /* NULL: internal, cancelled */
    ngx_uint_t                  kind;
    char                       *data;       /* the command, RESP */
    size_t                      len;
    size_t                      sent;
    ngx_msec_t                  start;
    unsigned                    eval:1;     /* sent with the script */
} ngx_http_idv_redis_cmd_t;


struct ngx_http_idv_redis_s {
    ngx_str_t                   name;
    ngx_str_t                   server;     /* as written, for messages */
    ngx_addr_t                  addr;
    ngx_str_t                   user;
    ngx_str_t                   password;   /* from password_file */
    ngx_int_t                   db;
    ngx_str_t                   prefix;     /* "{PREFIX}:" */
    ngx_msec_t                  timeout;
    u_char                     *conf_file;
    ngx_uint_t                  conf_line;

    /* this worker's */
    ngx_peer_connection_t       peer;
    ngx_uint_t                  state;
    redisReader                *reader;
    ngx_queue_t                 waiting;    /* until the connection is up */
    ngx_queue_t                 out;        /* not yet written whole */
    ngx_queue_t                 sent;       /* awaiting their replies */
    ngx_event_t                 timer;      /* the oldest command's */
    ngx_log_t                   log;        /* the connection's */
    ngx_msec_t                  backoff;
    ngx_msec_t                  retry_at;   /* while down: no attempt */
    ngx_uint_t                  failures;   /* since the last line */
    time_t                      logged;
    u_char                      key[NGX_HTTP_IDV_REDIS_KEY_LEN];
    ngx_http_idv_redis_arena_t *arena;      /* the reply being parsed */
};


typedef struct {
    ngx_array_t                 servers;    /* ngx_http_idv_redis_t */
} ngx_http_idv_redis_main_conf_t;


static ngx_int_t ngx_http_idv_redis_run(ngx_http_idv_store_batch_t *b);
static void ngx_http_idv_redis_cancel(ngx_http_idv_store_batch_t *b);
static ngx_int_t ngx_http_idv_redis_connect(ngx_http_idv_redis_t *rd,
    ngx_log_t *log);
static ngx_int_t ngx_http_idv_redis_handshake(ngx_http_idv_redis_t *rd);
static ngx_int_t ngx_http_idv_redis_format(ngx_http_idv_redis_cmd_t *cmd);
static u_char *ngx_http_idv_redis_count(u_char *p, u_char type, size_t n);
static u_char *ngx_http_idv_redis_arg(u_char *p, u_char *data, size_t len);
static u_char *ngx_http_idv_redis_num(u_char *p, uint64_t n);
static u_char *ngx_http_idv_redis_decimal(u_char *p, uint64_t n);
static void ngx_http_idv_redis_settle(ngx_http_idv_store_batch_t *first,
    ngx_int_t rc);
static ngx_http_idv_redis_cmd_t *ngx_http_idv_redis_internal(
    ngx_http_idv_redis_t *rd, ngx_uint_t kind, int argc, const char **argv,
    const size_t *argvlen);
static void ngx_http_idv_redis_flush(ngx_http_idv_redis_t *rd);
static void ngx_http_idv_redis_write_handler(ngx_event_t *ev);
static void ngx_http_idv_redis_read_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_idv_redis_reply(ngx_http_idv_redis_t *rd,
    ngx_http_idv_redis_cmd_t *cmd, redisReply *reply, ngx_queue_t *done);
static ngx_int_t ngx_http_idv_redis_results(
    ngx_http_idv_store_batch_t *first, redisReply *reply);
static void ngx_http_idv_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_idv_redis_arm(ngx_http_idv_redis_t *rd);
static void ngx_http_idv_redis_fail(ngx_http_idv_redis_t *rd,
    const char *why, ngx_err_t err);
static void ngx_http_idv_redis_complete(ngx_queue_t *done);
static void ngx_http_idv_redis_free(ngx_http_idv_redis_cmd_t *cmd);
static void *ngx_http_idv_redis_object(const redisReadTask *task, int type);
static void *ngx_http_idv_redis_string(const redisReadTask *task, char *str,
    size_t len);
static void *ngx_http_idv_redis_array(const redisReadTask *task,
    int elements);
static void *ngx_http_idv_redis_integer(const redisReadTask *task,
    long long value);
static void *ngx_http_idv_redis_nil(const redisReadTask *task);
static void ngx_http_idv_redis_free_object(void *obj);
static void ngx_http_idv_redis_release(ngx_http_idv_redis_t *rd,
    redisReply *reply);
static double ngx_http_idv_redis_used(ngx_http_idv_store_t *st);
static ngx_uint_t ngx_http_idv_redis_full(ngx_http_idv_store_t *st);
static ngx_uint_t ngx_http_idv_redis_evicted(ngx_http_idv_store_t *st);
static ngx_uint_t ngx_http_idv_redis_entries(ngx_http_idv_store_t *st);

static void *ngx_http_idv_redis_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idv_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_redis_password(ngx_http_idv_conf_file_t *file,
    void *data);
static void ngx_http_idv_redis_exit_process(ngx_cycle_t *cycle);
static void ngx_http_idv_redis_drop(ngx_queue_t *queue);


static redisReplyObjectFunctions  ngx_http_idv_redis_reply_fn = {
    ngx_http_idv_redis_string,
    ngx_http_idv_redis_array,
    ngx_http_idv_redis_integer,
    ngx_http_idv_redis_nil,
    ngx_http_idv_redis_free_object
};


static const ngx_http_idv_store_backend_t  ngx_http_idv_redis_backend = {
    "redis",
    ngx_http_idv_redis_run,
    ngx_http_idv_redis_used,
    ngx_http_idv_redis_full,
    ngx_http_idv_redis_evicted,
    ngx_http_idv_redis_entries,
    ngx_http_idv_redis_cancel
};


static ngx_command_t  ngx_http_idv_redis_commands[] = {

    { ngx_string("idv_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_redis_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_idv_redis_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_idv_redis_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_redis_module_ctx,        /* module context */
    ngx_http_idv_redis_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_idv_redis_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The script: a group of batches, one after the other.
 *
 *   KEYS[1]    the namespace's hash key record ("{PREFIX}:key")
 *   KEYS[2..]  one entry per operation ("{PREFIX}:ZONE:HASH")
 *   ARGV[1]    the hash key the caller hashed its keys with
 *   ARGV[2]    the batches: "a3,n1" (atomic or not, their operations)
 *   ARGV[3..]  ten per operation: op, value, expect, has expect, ttl (ms),
 *              delta, rate, burst, cost, fill (CHECK: present)
 *
 * An entry is a hash: v (the value), w (when it was written, in ms of the
 * server's clock); its lifetime is the key's.  Counters are 8-byte and
 * buckets 16-byte little-endian values, as in shared memory.  A batch's
 * operations are evaluated first; its writes are applied after, all of
 * them, or none when an atomic batch has a declined ADD, CAS, BUCKET or
 * CHECK.  A batch with such a decline is the last one run.  Returns four
 * values per operation (rc: 1 done, 0 declined; the value or nil;
 * number; age in ms), then one per batch: 1 run, 0 run and the group
 * stopped there, -1 not run.
 */

static const char  ngx_http_idv_redis_script[] =
    "pcall(redis.replicate_commands)\n"
    "\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "\n"
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "    return redis.error_reply('IDVKEY the namespace key changed')\n"
    "end\n"
    "\n"
    "local out = {}\n"
    "local status = {}\n"
    "local nk = 2\n"
    "local stop = false\n"
    "\n"
    "for part in string.gmatch(ARGV[2], '[^,]+') do\n"
    "    local nops = tonumber(string.sub(part, 2))\n"
    "    local atomic = string.sub(part, 1, 1) == 'a'\n"
    "\n"
    "    if stop then\n"
    "        status[#status + 1] = -1\n"
    "        for i = 1, nops do\n"
    "            out[#out + 1] = 0; out[#out + 1] = false\n"
    "            out[#out + 1] = 0; out[#out + 1] = 0\n"
    "        end\n"
    "        nk = nk + nops\n"
    "\n"
    "    else\n"
    "        local state = {}\n"
    "        local order = {}\n"
    "        local declined = false\n"
    "\n"
    "        for i = nk, nk + nops - 1 do\n"
    "            local k = KEYS[i]\n"
    "            local a = 3 + (i - 2) * 10\n"
    "            local op = tonumber(ARGV[a])\n"
    "            local value = ARGV[a + 1]\n"
    "            local expect = ARGV[a + 2]\n"
    "            local has_expect = ARGV[a + 3] == '1'\n"
    "            local ttl = tonumber(ARGV[a + 4])\n"
    "            local delta = tonumber(ARGV[a + 5])\n"
    "            local rate = tonumber(ARGV[a + 6])\n"
    "            local burst = tonumber(ARGV[a + 7])\n"
    "            local cost = tonumber(ARGV[a + 8])\n"
    "            local fill = ARGV[a + 9] == '1'\n"
    "\n"
    "            local s = state[k]\n"
    "\n"
    "            if s == nil then\n"
    "                s = { exists = false, dirty = false }\n"
    "                local h = redis.call('HMGET', k, 'v', 'w')\n"
    "\n"
    "                if h[1] then\n"
    "                    s.exists = true\n"
    "                    s.v = h[1]\n"
    "                    s.w = tonumber(h[2]) or now\n"
    "                    local pt = redis.call('PTTL', k)\n"
    "                    if pt > 0 then s.exp = now + pt else s.exp = 0 end\n"
    "                end\n"
    "\n"
    "                state[k] = s\n"
    "                order[#order + 1] = k\n"
    "            end\n"
    "\n"
    "            local rc, res, num, age = 0, false, 0, 0\n"
    "\n"
    "            local function report()\n"
    "                res = s.v\n"
    "                age = now - s.w\n"
    "                if age < 0 then age = 0 end\n"
    "            end\n"
    "\n"
    "            local function write(v, life)\n"
    "                s.exists = true\n"
    "                s.v = v\n"
    "                s.w = now\n"
    "                if life > 0 then s.exp = now + life else s.exp = 0 end\n"
    "                s.dirty = true\n"
    "            end\n"
    "\n"
    "            if op == 1 then                                 -- GET\n"
    "                if s.exists then rc = 1; report() end\n"
    "\n"
    "            elseif op == 2 then                             -- ADD\n"
    "                if s.exists then report() else write(value, ttl); rc = 1 end\n"
    "\n"
    "            elseif op == 3 then                             -- SET\n"
    "                write(value, ttl); rc = 1\n"
    "\n"
    "            elseif op == 4 then                             -- INCR\n"
    "                if s.exists then\n"
    "                    if #s.v == 8 then\n"
    "                        num = struct.unpack('<l', s.v) + delta\n"
    "                        s.v = struct.pack('<l', num)\n"
    "                        s.w = now\n"
    "                        s.dirty = true\n"
    "                        rc = 1\n"
    "                    end\n"
    "                else\n"
    "                    num = delta\n"
    "                    write(struct.pack('<l', num), ttl)\n"
    "                    rc = 1\n"
    "                end\n"
    "\n"
    "            elseif op == 5 then                             -- DELETE\n"
    "                if s.exists and (not has_expect or s.v == expect) then\n"
    "                    s.exists = false\n"
    "                    s.dirty = true\n"
    "                    rc = 1\n"
    "                end\n"
    "\n"
    "            elseif op == 6 then                             -- CAS\n"
    "                if s.exists then\n"
    "                    if s.v == expect then\n"
    "                        write(value, ttl); rc = 1\n"
    "                    else\n"
    "                        report()\n"
    "                    end\n"
    "                end\n"
    "\n"
    "            elseif op == 8 then                             -- CHECK\n"
    "                if s.exists then\n"
    "                    report()\n"
    "                    if string.sub(s.v, 1, #expect) == expect then rc = 1 end\n"
    "                elseif not fill then\n"
    "                    rc = 1\n"
    "                end\n"
    "\n"
    "            else                                            -- BUCKET\n"
    "                local level, last, ms, ok = 0, now, 0, true\n"
    "\n"
    "                if s.exists then\n"
    "                    if #s.v ~= 16 then\n"
    "                        ok = false\n"
    "                    else\n"
    "                        local excess, at = struct.unpack('<l<l', s.v)\n"
    "                        ms = now - at\n"
    "                        if ms < -60000 then ms = 1\n"
    "                        elseif ms < 0 then ms = 0 end\n"
    "                        level = excess - math.floor(rate\n"
    "                                                    * math.min(ms, 3600000)\n"
    "                                                    / 60000)\n"
    "                        if ms == 0 then last = at end\n"
    "                    end\n"
    "                end\n"
    "\n"
    "                if ok then\n"
    "                    local excess, charge = 0, true\n"
    "\n"
    "                    if fill then\n"
    "                        rc = 1\n"
    "                        num = math.max(level, 0)\n"
    "                        if cost == 0 or level >= cost then\n"
    "                            charge = false\n"
    "                        else\n"
    "                            excess = cost\n"
    "                            last = now\n"
    "                        end\n"
    "\n"
    "                    else\n"
    "                        excess = math.max(level + cost, 0)\n"
    "                        num = excess\n"
    "                        if excess > burst then\n"
    "                            charge = false\n"
    "                        else\n"
    "                            rc = 1\n"
    "                            if cost == 0 then charge = false end\n"
    "                        end\n"
    "                    end\n"
    "\n"
    "                    if charge then\n"
    "                        num = excess\n"
    "                        local life = math.max(math.ceil(excess * 60000 / rate),\n"
    "                                              1)\n"
    "                        s.exists = true\n"
    "                        s.v = struct.pack('<l<l', excess, last)\n"
    "                        s.w = now\n"
    "                        s.exp = now + life\n"
    "                        s.dirty = true\n"
    "                    end\n"
    "                end\n"
    "            end\n"
    "\n"
    "            if rc == 0 and (op == 2 or op == 6 or op == 7 or op == 8) then\n"
    "                declined = true\n"
    "            end\n"
    "\n"
    "            out[#out + 1] = rc\n"
    "            out[#out + 1] = res\n"
    "            out[#out + 1] = num\n"
    "            out[#out + 1] = age\n"
    "        end\n"
    "\n"
    "        if not (atomic and declined) then\n"
    "            for _, k in ipairs(order) do\n"
    "                local s = state[k]\n"
    "\n"
    "                if s.dirty then\n"
    "                    if s.exists then\n"
    "                        redis.call('HSET', k, 'v', s.v, 'w', s.w)\n"
    "                        if s.exp > 0 then\n"
    "                            redis.call('PEXPIREAT', k, s.exp)\n"
    "                        else\n"
    "                            redis.call('PERSIST', k)\n"
    "                        end\n"
    "                    else\n"
    "                        redis.call('DEL', k)\n"
    "                    end\n"
    "                end\n"
    "            end\n"
    "        end\n"
    "\n"
    "        status[#status + 1] = declined and 0 or 1\n"
    "        stop = declined\n"
    "        nk = nk + nops\n"
    "    end\n"
    "end\n"
    "\n"
    "for i = 1, #status do out[#out + 1] = status[i] end\n"
    "\n"
    "return out\n";


/* the script's SHA-1 in hex: the same for every configuration */
static u_char  ngx_http_idv_redis_sha[SHA_DIGEST_LENGTH * 2];


/* running a batch */

static ngx_int_t
ngx_http_idv_redis_run(ngx_http_idv_store_batch_t *b)
{
    ngx_msec_t                 now;
    ngx_http_idv_redis_t      *rd;
    ngx_http_idv_redis_cmd_t  *cmd;

    rd = b->ops[0].store->remote;
    now = ngx_current_msec;

    if (rd->state == NGX_HTTP_IDV_REDIS_DOWN) {

        if ((ngx_msec_int_t) (rd->retry_at - now) > 0
            || ngx_http_idv_redis_connect(rd, b->log) != NGX_OK)
        {
            /* backing off: the zones' policies settle it at once */
            rd->failures++;
            return ngx_http_idv_store_fallback(b);
        }
    }

    if (b->handler == NULL && rd->state != NGX_HTTP_IDV_REDIS_UP) {
        /* fire and forget: nothing may wait for the connection */
        rd->failures++;
        return ngx_http_idv_store_fallback(b);
    }

    cmd = ngx_alloc(sizeof(ngx_http_idv_redis_cmd_t), b->log);
    if (cmd == NULL) {
        ngx_http_idv_redis_settle(b, NGX_ERROR);
        return NGX_OK;
    }

    ngx_memzero(cmd, sizeof(ngx_http_idv_redis_cmd_t));

    cmd->redis = rd;
    cmd->batch = b;
    cmd->kind = NGX_HTTP_IDV_REDIS_BATCH;
    cmd->start = now;

    b->running = cmd;

    if (rd->state == NGX_HTTP_IDV_REDIS_CONNECTING) {
        /* formatted once the namespace's key is known */
        ngx_queue_insert_tail(&rd->waiting, &cmd->queue);
        ngx_http_idv_redis_arm(rd);
        return NGX_AGAIN;
    }

    if (ngx_http_idv_redis_format(cmd) != NGX_OK) {
        b->running = NULL;
        ngx_http_idv_redis_free(cmd);
        ngx_http_idv_redis_settle(b, NGX_ERROR);
        return NGX_OK;
    }

    if (b->handler == NULL) {
        /* sent as it is now; the reply is only checked */
        cmd->batch = NULL;
        b->running = NULL;
        ngx_http_idv_redis_settle(b, NGX_OK);
    }

    ngx_queue_insert_tail(&rd->out, &cmd->queue);
    ngx_http_idv_redis_arm(rd);
    ngx_http_idv_redis_flush(rd);

    return (b->handler == NULL) ? NGX_OK : NGX_AGAIN;
}


/* written once the current event is handled: batches share a write */

static void
ngx_http_idv_redis_flush(ngx_http_idv_redis_t *rd)
{
    ngx_event_t  *wev;

    if (rd->peer.connection == NULL) {
        return;
    }

    wev = rd->peer.connection->write;

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* the batch's request ends first: its reply, when it comes, is dropped */

static void
ngx_http_idv_redis_cancel(ngx_http_idv_store_batch_t *b)
{
    ngx_http_idv_redis_cmd_t  *cmd;

    cmd = b->running;

    if (cmd) {
        cmd->batch = NULL;
        b->running = NULL;
    }
}


/*
 * EVALSHA sha N+1 {P}:key {P}:zone:hash... hashkey atomic args...
 * (or EVAL script ...)
 */

static ngx_int_t
ngx_http_idv_redis_format(ngx_http_idv_redis_cmd_t *cmd)
{
    u_char                      *p, hash[16];
    size_t                       size, script;
    ngx_uint_t                   i, nops, nbatches;
    ngx_http_idv_redis_t        *rd;
    ngx_http_idv_store_op_t     *op;
    ngx_http_idv_store_batch_t  *first, *b;

    first = cmd->batch;
    rd = cmd->redis;

    script = cmd->eval ? sizeof(ngx_http_idv_redis_script) - 1
                       : SHA_DIGEST_LENGTH * 2;

    /* at most: every argument's "$LEN\r\n...\r\n" is 32 bytes more */

    nops = 0;
    nbatches = 0;
    size = 8 * 32 + script + rd->prefix.len + 3
           + NGX_HTTP_IDV_REDIS_KEY_LEN;

    for (b = first; b; b = b->next) {
        nbatches++;
        nops += b->nops;
        size += 2 + NGX_INT_T_LEN;

        for (i = 0; i < b->nops; i++) {
            op = &b->ops[i];
            size += (1 + NGX_HTTP_IDV_REDIS_ARGS) * 32 + rd->prefix.len
                    + op->store->name.len + 1 + 32 + op->value.len
                    + op->expect.len + 6 * NGX_INT64_LEN;
        }
    }

    cmd->data = ngx_alloc(size, first->log);
    if (cmd->data == NULL) {
        return NGX_ERROR;
    }

    p = (u_char *) cmd->data;

    p = ngx_http_idv_redis_count(p, '*',
                                 3 + 1 + nops + 2
                                 + nops * NGX_HTTP_IDV_REDIS_ARGS);

    if (cmd->eval) {
        p = ngx_http_idv_redis_arg(p, (u_char *) "EVAL", 4);
        p = ngx_http_idv_redis_arg(p, (u_char *) ngx_http_idv_redis_script,
                                   script);

    } else {
        p = ngx_http_idv_redis_arg(p, (u_char *) "EVALSHA", 7);
        p = ngx_http_idv_redis_arg(p, ngx_http_idv_redis_sha, script);
    }

    p = ngx_http_idv_redis_num(p, nops + 1);

    /* the keys: "{PREFIX}:key", then "{PREFIX}:ZONE:HASH" per operation */

    p = ngx_http_idv_redis_count(p, '$', rd->prefix.len + 3);
    p = ngx_cpymem(p, rd->prefix.data, rd->prefix.len);
    p = ngx_cpymem(p, "key\r\n", 5);

    for (b = first; b; b = b->next) {
        for (i = 0; i < b->nops; i++) {
            op = &b->ops[i];

            ngx_http_idv_siphash(hash, sizeof(hash), op->key.data,
                                 op->key.len, rd->key);

            p = ngx_http_idv_redis_count(p, '$', rd->prefix.len
                                                 + op->store->name.len
                                                 + 1 + 32);
            p = ngx_cpymem(p, rd->prefix.data, rd->prefix.len);
            p = ngx_cpymem(p, op->store->name.data, op->store->name.len);
            *p++ = ':';
            p = ngx_hex_dump(p, hash, sizeof(hash));
            *p++ = CR; *p++ = LF;
        }
    }

    p = ngx_http_idv_redis_arg(p, rd->key, NGX_HTTP_IDV_REDIS_KEY_LEN);

    /* the group's plan: "a3,n1" */

    {
        u_char  plan[NGX_HTTP_IDV_GATHER_MAX * (2 + NGX_INT_T_LEN)
                     + 2 + NGX_INT_T_LEN], *q;

        q = plan;

        for (b = first; b; b = b->next) {
            if (b != first) {
                *q++ = ',';
            }

            *q++ = b->atomic ? 'a' : 'n';
            q = ngx_http_idv_redis_decimal(q, b->nops);

            if ((size_t) (q - plan) > sizeof(plan) - 2 - NGX_INT_T_LEN) {
                ngx_free(cmd->data);
                cmd->data = NULL;
                return NGX_ERROR;
            }
        }

        p = ngx_http_idv_redis_arg(p, plan, q - plan);
    }

    for (b = first; b; b = b->next) {
        for (i = 0; i < b->nops; i++) {
            op = &b->ops[i];

            p = ngx_http_idv_redis_num(p, op->op);
            p = ngx_http_idv_redis_arg(p, op->value.data, op->value.len);
            p = ngx_http_idv_redis_arg(p, op->expect.data, op->expect.len);
            p = ngx_http_idv_redis_arg(p, (u_char *)
                                       (op->expect.data ? "1" : "0"), 1);
            p = ngx_http_idv_redis_num(p, op->ttl);
            p = ngx_http_idv_redis_num(p, (uint64_t) op->delta);
            p = ngx_http_idv_redis_num(p, op->rate);
            p = ngx_http_idv_redis_num(p, op->burst);
            p = ngx_http_idv_redis_num(p, op->cost);
            p = ngx_http_idv_redis_arg(p, (u_char *)
                                       ((op->fill || op->present) ? "1" : "0"),
                                       1);
        }
    }

    cmd->len = p - (u_char *) cmd->data;
    cmd->sent = 0;

    return NGX_OK;
}


/* RESP, written by hand: "*N" or "$N", an argument, a decimal argument */

static u_char *
ngx_http_idv_redis_count(u_char *p, u_char type, size_t n)
{
    *p++ = type;
    p = ngx_http_idv_redis_decimal(p, n);
    *p++ = CR; *p++ = LF;

    return p;
}


static u_char *
ngx_http_idv_redis_arg(u_char *p, u_char *data, size_t len)
{
    p = ngx_http_idv_redis_count(p, '$', len);
    p = ngx_http_idv_cpymem(p, data, len);
    *p++ = CR; *p++ = LF;

    return p;
}


/* a number as the script reads it: a delta is signed, the rest are not */

static u_char *
ngx_http_idv_redis_num(u_char *p, uint64_t n)
{
    u_char  digits[NGX_INT64_LEN + 1], *d;

    if (n < 10) {
        /* most are: an operation's code, a zero */
        *p++ = '$'; *p++ = '1'; *p++ = CR; *p++ = LF;
        *p++ = (u_char) ('0' + n);
        *p++ = CR; *p++ = LF;

        return p;
    }

    if ((int64_t) n < 0) {
        digits[0] = '-';
        d = ngx_http_idv_redis_decimal(digits + 1, (uint64_t) -(int64_t) n);

    } else {
        d = ngx_http_idv_redis_decimal(digits, n);
    }

    return ngx_http_idv_redis_arg(p, digits, d - digits);
}


static u_char *
ngx_http_idv_redis_decimal(u_char *p, uint64_t n)
{
    u_char   tmp[NGX_INT64_LEN], *t;

    t = tmp + sizeof(tmp);

    do {
        *--t = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    return ngx_cpymem(p, t, tmp + sizeof(tmp) - t);
}


/* every batch of a group, one outcome */

static void
ngx_http_idv_redis_settle(ngx_http_idv_store_batch_t *first, ngx_int_t rc)
{
    ngx_http_idv_store_batch_t  *b;

    for (b = first; b; b = b->next) {
        b->rc = rc;
    }
}


/* the connection */

static ngx_int_t
ngx_http_idv_redis_connect(ngx_http_idv_redis_t *rd, ngx_log_t *log)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&rd->peer, sizeof(ngx_peer_connection_t));

    rd->peer.sockaddr = rd->addr.sockaddr;
    rd->peer.socklen = rd->addr.socklen;
    rd->peer.name = &rd->server;
    rd->peer.get = ngx_event_get_peer;

    /* the connection's own complaints stay below [error]: ours is one
       rate-limited line */
    rd->log = *ngx_cycle->log;
    rd->log.log_level = NGX_LOG_CRIT;
    rd->log.next = NULL;
    rd->peer.log = &rd->log;
    rd->peer.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&rd->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (rd->peer.connection) {
            ngx_close_connection(rd->peer.connection);
            rd->peer.connection = NULL;
        }

        ngx_http_idv_redis_fail(rd, "cannot connect", 0);
        return NGX_ERROR;
    }

    c = rd->peer.connection;

    c->data = rd;
    c->read->handler = ngx_http_idv_redis_read_handler;
    c->write->handler = ngx_http_idv_redis_write_handler;
    c->log = &rd->log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->pool = NULL;

    if (rd->arena == NULL) {
        rd->arena = ngx_alloc(sizeof(ngx_http_idv_redis_arena_t),
                              ngx_cycle->log);
        if (rd->arena == NULL) {
            ngx_close_connection(c);
            rd->peer.connection = NULL;
            return NGX_ERROR;
        }
    }

    rd->arena->nslots = 0;
    rd->arena->nptrs = 0;

    rd->reader = redisReaderCreateWithFunctions(&ngx_http_idv_redis_reply_fn);
    if (rd->reader != NULL) {
        rd->reader->privdata = rd->arena;
    }

    if (rd->reader == NULL) {
        ngx_close_connection(c);
        rd->peer.connection = NULL;
        return NGX_ERROR;
    }

    rd->state = NGX_HTTP_IDV_REDIS_CONNECTING;

    if (ngx_http_idv_redis_handshake(rd) != NGX_OK) {
        ngx_http_idv_redis_fail(rd, "cannot connect", 0);
        return NGX_ERROR;
    }

    ngx_http_idv_redis_flush(rd);

    return NGX_OK;
}


/*
 * Sent before anything else, pipelined: AUTH, SELECT, the script, the
 * namespace's hash key (ours if it has none yet), then the key it holds.
 */

static ngx_int_t
ngx_http_idv_redis_handshake(ngx_http_idv_redis_t *rd)
{
    u_char       key[NGX_HTTP_IDV_REDIS_KEY_LEN], name[256], db[NGX_INT_T_LEN];
    size_t       len[5];
    const char  *argv[5];

    if (rd->password.len) {
        argv[0] = "AUTH";
        len[0] = 4;

        if (rd->user.len) {
            argv[1] = (char *) rd->user.data;
            len[1] = rd->user.len;
            argv[2] = (char *) rd->password.data;
            len[2] = rd->password.len;

        } else {
            argv[1] = (char *) rd->password.data;
            len[1] = rd->password.len;
        }

        if (ngx_http_idv_redis_internal(rd, NGX_HTTP_IDV_REDIS_AUTH,
                                        rd->user.len ? 3 : 2, argv, len)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    if (rd->db) {
        argv[0] = "SELECT";
        len[0] = 6;
        argv[1] = (char *) db;
        len[1] = ngx_sprintf(db, "%i", rd->db) - db;

        if (ngx_http_idv_redis_internal(rd, NGX_HTTP_IDV_REDIS_SELECT, 2,
                                        argv, len)
            == NULL)
        {
            return NGX_ERROR;
        }
    }

    argv[0] = "SCRIPT";
    len[0] = 6;
    argv[1] = "LOAD";
    len[1] = 4;
    argv[2] = ngx_http_idv_redis_script;
    len[2] = sizeof(ngx_http_idv_redis_script) - 1;

    if (ngx_http_idv_redis_internal(rd, NGX_HTTP_IDV_REDIS_LOAD, 3, argv, len)
        == NULL)
    {
        return NGX_ERROR;
    }

    if (RAND_bytes(key, sizeof(key)) != 1) {
        return NGX_ERROR;
    }

    argv[0] = "SET";
    len[0] = 3;
    argv[1] = (char *) name;
    len[1] = ngx_cpymem(name, rd->prefix.data, rd->prefix.len) - name + 3;
    ngx_memcpy(name + rd->prefix.len, "key", 3);
    argv[2] = (char *) key;
    len[2] = sizeof(key);
    argv[3] = "NX";
    len[3] = 2;

    if (ngx_http_idv_redis_internal(rd, NGX_HTTP_IDV_REDIS_SETKEY, 4, argv,
                                    len)
        == NULL)
    {
        return NGX_ERROR;
    }

    argv[0] = "GET";
    len[0] = 3;

    if (ngx_http_idv_redis_internal(rd, NGX_HTTP_IDV_REDIS_GETKEY, 2, argv,
                                    len)
        == NULL)
    {
        return NGX_ERROR;
    }

    ngx_explicit_memzero(key, sizeof(key));

    return NGX_OK;
}


static ngx_http_idv_redis_cmd_t *
ngx_http_idv_redis_internal(ngx_http_idv_redis_t *rd, ngx_uint_t kind,
    int argc, const char **argv, const size_t *argvlen)
{
    u_char                    *p;
    size_t                     size;
    ngx_int_t                  i;
    ngx_http_idv_redis_cmd_t  *cmd;

    cmd = ngx_alloc(sizeof(ngx_http_idv_redis_cmd_t), ngx_cycle->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_idv_redis_cmd_t));

    size = 32;

    for (i = 0; i < argc; i++) {
        size += 32 + argvlen[i];
    }

    cmd->data = ngx_alloc(size, ngx_cycle->log);
    if (cmd->data == NULL) {
        ngx_free(cmd);
        return NULL;
    }

    p = ngx_http_idv_redis_count((u_char *) cmd->data, '*', argc);

    for (i = 0; i < argc; i++) {
        p = ngx_http_idv_redis_arg(p, (u_char *) argv[i], argvlen[i]);
    }

    cmd->redis = rd;
    cmd->kind = kind;
    cmd->len = p - (u_char *) cmd->data;
    cmd->start = ngx_current_msec;

    ngx_queue_insert_tail(&rd->out, &cmd->queue);
    ngx_http_idv_redis_arm(rd);

    return cmd;
}


static void
ngx_http_idv_redis_write_handler(ngx_event_t *ev)
{
    ssize_t                    n;
    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_http_idv_redis_t      *rd;
    ngx_http_idv_redis_cmd_t  *cmd;

    c = ev->data;
    rd = c->data;

    while (!ngx_queue_empty(&rd->out)) {
        q = ngx_queue_head(&rd->out);
        cmd = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);

        n = c->send(c, (u_char *) cmd->data + cmd->sent,
                    cmd->len - cmd->sent);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ngx_http_idv_redis_fail(rd, "cannot send to", ngx_socket_errno);
            return;
        }

        cmd->sent += n;

        if (cmd->sent < cmd->len) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&rd->sent, q);

        /* written: its bytes are no longer needed */
        ngx_free(cmd->data);
        cmd->data = NULL;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_http_idv_redis_fail(rd, "cannot send to", 0);
    }
}


static void
ngx_http_idv_redis_read_handler(ngx_event_t *ev)
{
    void                      *reply;
    ssize_t                    n;
    ngx_int_t                  rc;
    ngx_queue_t                done, *q;
    ngx_connection_t          *c;
    ngx_http_idv_redis_t      *rd;
    ngx_http_idv_redis_cmd_t  *cmd;
    u_char                     buf[16384];

    c = ev->data;
    rd = c->data;

    ngx_queue_init(&done);

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_idv_redis_fail(rd, n == 0 ? "connection closed by"
                                               : "cannot read from",
                                    n == 0 ? 0 : ngx_socket_errno);
            return;
        }

        if (redisReaderFeed(rd->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_idv_redis_fail(rd, "a malformed reply from", 0);
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(rd->reader, &reply) != REDIS_OK) {
                ngx_http_idv_redis_fail(rd, "a malformed reply from", 0);
                return;
            }

            if (reply == NULL) {
                break;
            }

            if (ngx_queue_empty(&rd->sent)) {
                ngx_http_idv_redis_release(rd, reply);
                ngx_http_idv_redis_fail(rd, "an unexpected reply from", 0);
                return;
            }

            q = ngx_queue_head(&rd->sent);
            cmd = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);
            ngx_queue_remove(q);

            rc = ngx_http_idv_redis_reply(rd, cmd, reply, &done);

            ngx_http_idv_redis_release(rd, reply);

            if (rc != NGX_OK) {
                /* the connection is gone with every command it carried */
                ngx_http_idv_redis_complete(&done);
                return;
            }
        }

        if ((size_t) n < sizeof(buf)) {
            break;
        }
    }

    ngx_http_idv_redis_arm(rd);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_idv_redis_fail(rd, "cannot read from", 0);
    }

    ngx_http_idv_redis_complete(&done);
}


/*
 * A reply to its command: the handshake goes on, a batch gets its
 * results (or is sent again with the script, or fails).  NGX_ERROR when
 * the connection had to be closed.
 */

static ngx_int_t
ngx_http_idv_redis_reply(ngx_http_idv_redis_t *rd,
    ngx_http_idv_redis_cmd_t *cmd, redisReply *reply, ngx_queue_t *done)
{
    const char                  *why;
    ngx_queue_t                 *q;
    ngx_http_idv_redis_cmd_t    *w;
    ngx_http_idv_store_batch_t  *b;

    switch (cmd->kind) {

    case NGX_HTTP_IDV_REDIS_AUTH:
    case NGX_HTTP_IDV_REDIS_SELECT:
    case NGX_HTTP_IDV_REDIS_LOAD:
    case NGX_HTTP_IDV_REDIS_SETKEY:

        if (reply->type == REDIS_REPLY_ERROR) {
            why = (cmd->kind == NGX_HTTP_IDV_REDIS_AUTH)
                  ? "authentication refused by"
                  : (cmd->kind == NGX_HTTP_IDV_REDIS_SELECT)
                  ? "SELECT refused by"
                  : "a command of the handshake refused by";

            ngx_http_idv_redis_free(cmd);
            ngx_http_idv_redis_fail(rd, why, 0);
            return NGX_ERROR;
        }

        ngx_http_idv_redis_free(cmd);
        return NGX_OK;

    case NGX_HTTP_IDV_REDIS_GETKEY:

        ngx_http_idv_redis_free(cmd);

        if (reply->type != REDIS_REPLY_STRING
            || reply->len != NGX_HTTP_IDV_REDIS_KEY_LEN)
        {
            ngx_http_idv_redis_fail(rd, "no usable namespace key from", 0);
            return NGX_ERROR;
        }

        ngx_memcpy(rd->key, reply->str, NGX_HTTP_IDV_REDIS_KEY_LEN);

        if (rd->state != NGX_HTTP_IDV_REDIS_UP && rd->logged) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "idv redis \"%V\" (%V): connected again",
                          &rd->name, &rd->server);
            rd->logged = 0;
        }

        rd->state = NGX_HTTP_IDV_REDIS_UP;
        rd->backoff = 0;

        /* the batches that waited for the connection */

        while (!ngx_queue_empty(&rd->waiting)) {
            q = ngx_queue_head(&rd->waiting);
            w = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);
            ngx_queue_remove(q);

            if (w->batch == NULL) {
                ngx_http_idv_redis_free(w);
                continue;
            }

            if (ngx_http_idv_redis_format(w) != NGX_OK) {
                ngx_http_idv_redis_settle(w->batch, NGX_ERROR);
                ngx_queue_insert_tail(done, q);
                continue;
            }

            ngx_queue_insert_tail(&rd->out, q);
        }

        ngx_http_idv_redis_flush(rd);

        return NGX_OK;

    default: /* NGX_HTTP_IDV_REDIS_BATCH */
        break;
    }

    b = cmd->batch;

    if (reply->type == REDIS_REPLY_ERROR
        && reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && !cmd->eval)
    {
        /* the server lost the script (a restart, SCRIPT FLUSH): send it */

        if (b == NULL) {
            ngx_http_idv_redis_free(cmd);
            return NGX_OK;
        }

        cmd->eval = 1;

        if (ngx_http_idv_redis_format(cmd) != NGX_OK) {
            ngx_http_idv_redis_settle(b, NGX_ERROR);
            ngx_queue_insert_tail(done, &cmd->queue);
            return NGX_OK;
        }

        ngx_queue_insert_tail(&rd->out, &cmd->queue);
        ngx_http_idv_redis_flush(rd);

        return NGX_OK;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && reply->len >= 6 && ngx_strncmp(reply->str, "IDVKEY", 6) == 0)
    {
        /*
         * the namespace was emptied (FLUSHALL, a restart without
         * persistence): connect again to learn its new key
         */
        cmd->kind = NGX_HTTP_IDV_REDIS_BATCH + 100;    /* settle by policy */
        ngx_queue_insert_tail(done, &cmd->queue);
        ngx_http_idv_redis_fail(rd, "the namespace key changed on", 0);
        return NGX_ERROR;
    }

    if (b == NULL) {
        ngx_http_idv_redis_free(cmd);
        return NGX_OK;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && reply->len >= 3 && ngx_strncmp(reply->str, "OOM", 3) == 0)
    {
        /* the server is out of memory: nothing of the script ran */
        ngx_http_idv_redis_settle(b, NGX_HTTP_IDV_STORE_FULL);
        ngx_http_idv_store_count_full(b->ops[0].store);
        ngx_log_error(NGX_LOG_ERR, b->log, 0,
                      "idv %s zone \"%V\" is full: redis \"%V\" is out of "
                      "memory (maxmemory)", b->ops[0].store->kind,
                      &b->ops[0].store->name, &rd->name);

    } else if (ngx_http_idv_redis_results(b, reply) != NGX_OK) {
        /* the server's words (a missing ACL permission, say): no value */
        ngx_log_error(NGX_LOG_ERR, b->log, 0,
                      "idv redis \"%V\" (%V): the store's script failed: "
                      "%*s", &rd->name, &rd->server,
                      reply->type == REDIS_REPLY_ERROR
                      ? ngx_min(reply->len, 120) : sizeof("a malformed reply") - 1,
                      reply->type == REDIS_REPLY_ERROR
                      ? reply->str : "a malformed reply");
        ngx_http_idv_redis_settle(b, NGX_ERROR);
        cmd->kind = NGX_HTTP_IDV_REDIS_BATCH + 100;  /* settle by policy */

    }

    ngx_queue_insert_tail(done, &cmd->queue);

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_redis_results(ngx_http_idv_store_batch_t *first,
    redisReply *reply)
{
    ngx_uint_t                   i, nops, nbatches;
    redisReply                 **e, **status;
    ngx_http_idv_store_op_t     *op;
    ngx_http_idv_store_batch_t  *b;

    nops = 0;
    nbatches = 0;

    for (b = first; b; b = b->next) {
        nops += b->nops;
        nbatches++;
    }

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4 * nops + nbatches)
    {
        return NGX_ERROR;
    }

    e = reply->element;
    status = e + 4 * nops;

    for (b = first; b; b = b->next, status++) {

        if ((*status)->type != REDIS_REPLY_INTEGER) {
            return NGX_ERROR;
        }

        b->skipped = ((*status)->integer < 0);
        b->rc = b->skipped ? NGX_DECLINED : NGX_OK;

        for (i = 0; i < b->nops; i++, e += 4) {
            op = &b->ops[i];

            if (e[0]->type != REDIS_REPLY_INTEGER
                || e[2]->type != REDIS_REPLY_INTEGER
                || e[3]->type != REDIS_REPLY_INTEGER
                || (e[1]->type != REDIS_REPLY_STRING
                    && e[1]->type != REDIS_REPLY_NIL))
            {
                return NGX_ERROR;
            }

            op->rc = e[0]->integer ? NGX_OK : NGX_DECLINED;
            op->number = e[2]->integer;
            op->age = (ngx_msec_t) e[3]->integer;
            ngx_str_null(&op->result);

            if (e[1]->type == REDIS_REPLY_STRING && e[1]->len) {
                op->result.data = ngx_pnalloc(b->pool, e[1]->len);
                if (op->result.data == NULL) {
                    return NGX_ERROR;
                }

                ngx_memcpy(op->result.data, e[1]->str, e[1]->len);
                op->result.len = e[1]->len;
            }
        }
    }

    return NGX_OK;
}


/*
 * The oldest command's deadline.  Commands wait in the order they were
 * made: the oldest heads "sent", else "out", else "waiting".
 */

static void
ngx_http_idv_redis_arm(ngx_http_idv_redis_t *rd)
{
    ngx_msec_t                 elapsed;
    ngx_queue_t               *q;
    ngx_http_idv_redis_cmd_t  *cmd;

    if (!ngx_queue_empty(&rd->sent)) {
        q = ngx_queue_head(&rd->sent);

    } else if (!ngx_queue_empty(&rd->out)) {
        q = ngx_queue_head(&rd->out);

    } else if (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);

    } else {
        if (rd->timer.timer_set) {
            ngx_del_timer(&rd->timer);
        }

        return;
    }

    cmd = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);

    elapsed = ngx_current_msec - cmd->start;

    ngx_add_timer(&rd->timer,
                  elapsed < rd->timeout ? rd->timeout - elapsed : 1);
}


static void
ngx_http_idv_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_idv_redis_t  *rd;

    rd = ev->data;

    ngx_http_idv_redis_fail(rd, "no answer in time from", NGX_ETIMEDOUT);
}


/*
 * The connection is lost or given up: closed, every command it carried
 * and every batch waiting for it settled by the zones' policies, the
 * next attempt after a back-off.  The line about it is rate-limited.
 */

static void
ngx_http_idv_redis_fail(ngx_http_idv_redis_t *rd, const char *why,
    ngx_err_t err)
{
    ngx_queue_t                done, *q;
    ngx_http_idv_redis_cmd_t  *cmd;

    if (rd->peer.connection) {
        ngx_close_connection(rd->peer.connection);
        rd->peer.connection = NULL;
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    rd->state = NGX_HTTP_IDV_REDIS_DOWN;

    rd->backoff = rd->backoff ? ngx_min(rd->backoff * 2,
                                        NGX_HTTP_IDV_REDIS_BACKOFF_MAX)
                              : NGX_HTTP_IDV_REDIS_BACKOFF_MIN;
    rd->retry_at = ngx_current_msec + rd->backoff;

    rd->failures++;

    if (ngx_time() - rd->logged >= NGX_HTTP_IDV_REDIS_LOG_EVERY) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, err,
                      "idv redis \"%V\": %s %V (%ui failures); its zones "
                      "follow their on_error policy, next attempt in %Mms",
                      &rd->name, why, &rd->server, rd->failures,
                      rd->backoff);
        rd->logged = ngx_time();
        rd->failures = 0;
    }

    ngx_queue_init(&done);

    while (!ngx_queue_empty(&rd->sent)) {
        q = ngx_queue_head(&rd->sent);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&done, q);
    }

    while (!ngx_queue_empty(&rd->out)) {
        q = ngx_queue_head(&rd->out);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&done, q);
    }

    while (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&done, q);
    }

    for (q = ngx_queue_head(&done);
         q != ngx_queue_sentinel(&done);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);
        cmd->kind = NGX_HTTP_IDV_REDIS_BATCH + 100;    /* settle by policy */
    }

    ngx_http_idv_redis_complete(&done);
}


/*
 * Hands the finished batches to their callers, the connection's state
 * settled first: a caller may run its next batch from its handler.
 */

static void
ngx_http_idv_redis_complete(ngx_queue_t *done)
{
    ngx_queue_t                 *q;
    ngx_http_idv_redis_cmd_t    *cmd;
    ngx_http_idv_store_batch_t  *b;

    while (!ngx_queue_empty(done)) {
        q = ngx_queue_head(done);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_idv_redis_cmd_t, queue);
        b = cmd->batch;

        if (b) {
            b->running = NULL;

            if (cmd->kind != NGX_HTTP_IDV_REDIS_BATCH) {
                /* the backend failed it: the zones' policies say */
                (void) ngx_http_idv_store_fallback(b);
            }
        }

        ngx_http_idv_redis_free(cmd);

        if (b && b->handler) {
            b->handler(b);
        }
    }
}


static void
ngx_http_idv_redis_free(ngx_http_idv_redis_cmd_t *cmd)
{
    if (cmd->data) {
        ngx_free(cmd->data);
    }

    ngx_free(cmd);
}


/* hiredis's reply objects, from the connection's arena */

static void *
ngx_http_idv_redis_object(const redisReadTask *task, int type)
{
    redisReply                  *r, *parent;
    ngx_http_idv_redis_arena_t  *a;

    a = task->privdata;

    if (a->nslots == NGX_HTTP_IDV_REDIS_SLOTS) {
        return NULL;
    }

    r = &a->slots[a->nslots++];
    ngx_memzero(r, sizeof(redisReply));
    r->type = type;

    if (task->parent) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    return r;
}


static void *
ngx_http_idv_redis_string(const redisReadTask *task, char *str, size_t len)
{
    char        *copy;
    redisReply  *r;

    copy = ngx_alloc(len + 1, ngx_cycle->log);
    if (copy == NULL) {
        return NULL;
    }

    r = ngx_http_idv_redis_object(task, task->type);
    if (r == NULL) {
        ngx_free(copy);
        return NULL;
    }

    ngx_memcpy(copy, str, len);
    copy[len] = '\0';

    r->str = copy;
    r->len = len;

    return r;
}


static void *
ngx_http_idv_redis_array(const redisReadTask *task, int elements)
{
    redisReply                  *r;
    ngx_http_idv_redis_arena_t  *a;

    a = task->privdata;

    if (elements < 0
        || (ngx_uint_t) elements > NGX_HTTP_IDV_REDIS_SLOTS - a->nptrs)
    {
        return NULL;
    }

    r = ngx_http_idv_redis_object(task, REDIS_REPLY_ARRAY);
    if (r == NULL) {
        return NULL;
    }

    r->elements = elements;
    r->element = &a->ptrs[a->nptrs];
    a->nptrs += elements;

    return r;
}


static void *
ngx_http_idv_redis_integer(const redisReadTask *task, long long value)
{
    redisReply  *r;

    r = ngx_http_idv_redis_object(task, REDIS_REPLY_INTEGER);
    if (r) {
        r->integer = value;
    }

    return r;
}


static void *
ngx_http_idv_redis_nil(const redisReadTask *task)
{
    return ngx_http_idv_redis_object(task, REDIS_REPLY_NIL);
}


/* hiredis, on an error: the strings of what was built */

static void
ngx_http_idv_redis_free_object(void *obj)
{
    size_t       i;
    redisReply  *r;

    r = obj;

    if (r == NULL) {
        return;
    }

    if (r->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i < r->elements; i++) {
            ngx_http_idv_redis_free_object(r->element[i]);
        }

    } else if (r->str) {
        ngx_free(r->str);
        r->str = NULL;
    }
}


/* a reply handled: its strings freed, the arena ready for the next */

static void
ngx_http_idv_redis_release(ngx_http_idv_redis_t *rd, redisReply *reply)
{
    ngx_http_idv_redis_free_object(reply);

    rd->arena->nslots = 0;
    rd->arena->nptrs = 0;
}


/*
 * metrics: Redis keeps the entries (and evicts nothing the module could
 * count); the zone's memory is the local fallback and keeps the counters
 */

static double
ngx_http_idv_redis_used(ngx_http_idv_store_t *st)
{
    return ngx_http_idv_store_slab_used(st->shm_zone);
}


static ngx_uint_t
ngx_http_idv_redis_full(ngx_http_idv_store_t *st)
{
    return ngx_http_idv_store_full(st);
}


static ngx_uint_t
ngx_http_idv_redis_evicted(ngx_http_idv_store_t *st)
{
    return 0;
}


static ngx_uint_t
ngx_http_idv_redis_entries(ngx_http_idv_store_t *st)
{
    return 0;
}


/* configuration */

static void *
ngx_http_idv_redis_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idv_redis_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_redis_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->servers, cf->pool, 2,
                       sizeof(ngx_http_idv_redis_t))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


/*
 * Every "store=redis:NAME" of every zone finds its server: called by
 * ngx_http_idv_module's init_main_conf, before any module merges.
 */

ngx_int_t
ngx_http_idv_redis_attach(ngx_conf_t *cf)
{
    u_char                           digest[SHA_DIGEST_LENGTH];
    ngx_uint_t                       i, j, several;
    ngx_http_idv_redis_t            *rd, *first;
    ngx_http_idv_store_t           **st;
    ngx_http_idv_main_conf_t        *imcf;
    ngx_http_idv_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_redis_module);

    SHA1((u_char *) ngx_http_idv_redis_script,
         sizeof(ngx_http_idv_redis_script) - 1, digest);
    ngx_hex_dump(ngx_http_idv_redis_sha, digest, sizeof(digest));

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_module);
    st = imcf->stores.elts;
    rd = rmcf->servers.elts;
    first = NULL;
    several = 0;

    for (i = 0; i < imcf->stores.nelts; i++) {
        if (st[i]->remote_name.len == 0) {
            continue;
        }

        for (j = 0; j < rmcf->servers.nelts; j++) {
            if (rd[j].name.len == st[i]->remote_name.len
                && ngx_strncmp(rd[j].name.data, st[i]->remote_name.data,
                               rd[j].name.len) == 0)
            {
                break;
            }
        }

        if (j == rmcf->servers.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "idv %s zone \"%V\": \"store=redis:%V\" names no "
                          "\"idv_redis name=%V\" in the http block",
                          st[i]->kind, &st[i]->name, &st[i]->remote_name,
                          &st[i]->remote_name);
            return NGX_ERROR;
        }

        if (first == NULL) {
            first = &rd[j];
        }

        if (first != &rd[j]) {
            /* one round trip holds for the zones of one server */
            imcf->gather = 0;
            several = 1;

        } else if (!several) {
            imcf->gather = 1;
        }

        st[i]->remote = &rd[j];
        st[i]->backend = &ngx_http_idv_redis_backend;
    }

    return NGX_OK;
}


static char *
ngx_http_idv_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_redis_main_conf_t *rmcf = conf;

    u_char                *p;
    ngx_int_t              n;
    ngx_str_t             *value, v, password_file;
    ngx_url_t              u;
    ngx_uint_t             i;
    ngx_http_idv_redis_t  *rd, *other;

    value = cf->args->elts;

    rd = ngx_array_push(&rmcf->servers);
    if (rd == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rd, sizeof(ngx_http_idv_redis_t));

    rd->timeout = 1000;
    ngx_str_set(&rd->prefix, "idv");
    ngx_str_null(&password_file);

    for (i = 1; i < cf->args->nelts; i++) {

        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (p == NULL) {
            goto invalid;
        }

        v.data = p + 1;
        v.len = value[i].data + value[i].len - v.data;

#define ngx_http_idv_redis_is(s)                                              \
        ((size_t) (p - value[i].data) == sizeof(s) - 1                        \
         && ngx_strncmp(value[i].data, s, sizeof(s) - 1) == 0)

        if (ngx_http_idv_redis_is("name")) {
            if (v.len == 0 || v.len > 64) {
                goto invalid;
            }

            rd->name = v;
            continue;
        }

        if (ngx_http_idv_redis_is("server")) {
            ngx_memzero(&u, sizeof(ngx_url_t));

            u.url = v;
            u.no_resolve = 0;

            if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
                || u.no_port || u.family == AF_UNIX)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "idv_redis: invalid \"server=%V\"%s%s, "
                                   "expected HOST:PORT", &v,
                                   u.err ? ": " : "",
                                   u.err ? u.err : "");
                return NGX_CONF_ERROR;
            }

            rd->server = v;
            rd->addr = u.addrs[0];
            continue;
        }

        if (ngx_http_idv_redis_is("password_file")) {
            password_file = v;
            continue;
        }

        if (ngx_http_idv_redis_is("user")) {
            if (v.len == 0 || v.len > 128) {
                goto invalid;
            }

            rd->user = v;
            continue;
        }

        if (ngx_http_idv_redis_is("db")) {
            n = ngx_atoi(v.data, v.len);

            if (n == NGX_ERROR || n > 65535) {
                goto invalid;
            }

            rd->db = n;
            continue;
        }

        if (ngx_http_idv_redis_is("prefix")) {
            if (v.len == 0 || v.len > 64
                || ngx_strlchr(v.data, v.data + v.len, '{')
                || ngx_strlchr(v.data, v.data + v.len, '}'))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "idv_redis: invalid \"prefix=\", "
                                   "expected 1 to 64 characters without "
                                   "\"{\" or \"}\"");
                return NGX_CONF_ERROR;
            }

            rd->prefix = v;
            continue;
        }

        if (ngx_http_idv_redis_is("timeout")) {
            n = ngx_parse_time(&v, 0);

            if (n == NGX_ERROR || n < 1 || n > 60000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "idv_redis: invalid \"%V\", expected a "
                                   "time from 1ms to 60s", &value[i]);
                return NGX_CONF_ERROR;
            }

            rd->timeout = (ngx_msec_t) n;
            continue;
        }

#undef ngx_http_idv_redis_is

        goto invalid;
    }

    if (rd->name.len == 0 || rd->server.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv_redis needs \"name=NAME\" and "
                           "\"server=HOST:PORT\"");
        return NGX_CONF_ERROR;
    }

    other = rmcf->servers.elts;

    for (i = 0; i + 1 < rmcf->servers.nelts; i++) {
        if (other[i].name.len == rd->name.len
            && ngx_strncmp(other[i].name.data, rd->name.data,
                           rd->name.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "idv_redis \"%V\" is already declared",
                               &rd->name);
            return NGX_CONF_ERROR;
        }
    }

    if (rd->user.len && password_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv_redis: \"user=\" needs \"password_file=\"");
        return NGX_CONF_ERROR;
    }

    if (password_file.len
        && ngx_http_idv_conf_file_parse(cf, "idv_redis", &password_file,
                                        4096, ngx_http_idv_redis_password,
                                        rd)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* every key: "{PREFIX}:..." */

    p = ngx_pnalloc(cf->pool, rd->prefix.len + 3);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rd->prefix.len = ngx_sprintf(p, "{%V}:", &rd->prefix) - p;
    rd->prefix.data = p;

    rd->conf_file = cf->conf_file->file.name.data;
    rd->conf_line = cf->conf_file->line;

    ngx_queue_init(&rd->waiting);
    ngx_queue_init(&rd->out);
    ngx_queue_init(&rd->sent);

    rd->timer.handler = ngx_http_idv_redis_timer_handler;
    rd->timer.data = rd;
    rd->timer.log = cf->cycle->log;
    rd->timer.cancelable = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "idv_redis: invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* the password file: one line, the password */

static ngx_int_t
ngx_http_idv_redis_password(ngx_http_idv_conf_file_t *file, void *data)
{
    ngx_http_idv_redis_t *rd = data;

    ngx_str_t  line, more;

    if (ngx_http_idv_conf_file_line(file, &line) != NGX_OK) {
        ngx_http_idv_conf_file_error(file, 0, "has no password");
        return NGX_ERROR;
    }

    if (line.len > 512) {
        ngx_http_idv_conf_file_error(file, file->line,
                                     "the password is longer than 512 "
                                     "bytes");
        return NGX_ERROR;
    }

    if (ngx_http_idv_conf_file_line(file, &more) != NGX_DONE) {
        ngx_http_idv_conf_file_error(file, file->line,
                                     "more than the password: one line "
                                     "expected");
        return NGX_ERROR;
    }

    rd->password.data = ngx_pnalloc(file->cf->pool, line.len);
    if (rd->password.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(rd->password.data, line.data, line.len);
    rd->password.len = line.len;

    return NGX_OK;
}


static void
ngx_http_idv_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i;
    ngx_http_idv_redis_t            *rd;
    ngx_http_idv_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_idv_redis_module);
    if (rmcf == NULL) {
        return;
    }

    rd = rmcf->servers.elts;

    for (i = 0; i < rmcf->servers.nelts; i++) {
        if (rd[i].peer.connection) {
            ngx_close_connection(rd[i].peer.connection);
            rd[i].peer.connection = NULL;
        }

        if (rd[i].reader) {
            redisReaderFree(rd[i].reader);
            rd[i].reader = NULL;
        }

        /* the commands still queued: their requests end with the worker */

        ngx_http_idv_redis_drop(&rd[i].waiting);
        ngx_http_idv_redis_drop(&rd[i].out);
        ngx_http_idv_redis_drop(&rd[i].sent);

        if (rd[i].arena) {
            ngx_free(rd[i].arena);
            rd[i].arena = NULL;
        }
    }
}


static void
ngx_http_idv_redis_drop(ngx_queue_t *queue)
{
    ngx_queue_t  *q;

    if (queue->next == NULL) {
        /* a configuration this process never used */
        return;
    }

    while (!ngx_queue_empty(queue)) {
        q = ngx_queue_head(queue);
        ngx_queue_remove(q);
        ngx_http_idv_redis_free(ngx_queue_data(q, ngx_http_idv_redis_cmd_t,
                                               queue));
    }
}
