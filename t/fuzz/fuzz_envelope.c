
/*
 * libFuzzer target: the upstream answer as the gateway reads it.
 *
 * ngx_http_idv_upstream_answer() (ngx_http_idv_handler.c) reads the
 * service's envelope with ngx_http_idv_json_envelope(), a validating scan
 * that builds nothing, and decodes Code, RequestId and the others with
 * ngx_http_idv_json_unescape(); a cJSON tree is built only when a handler
 * asks for it (ngx_http_idv_answer_json(): idv_expand_json, the cache's
 * failed flight, the callback's result), from the same bytes.  This
 * target runs the scan on a buffer exactly as long as the answer (not
 * NUL-terminated) and checks it against cJSON:
 *
 *   what the scan accepts, cJSON parses as one object with a string
 *   "Code" and nothing but white space after it, so the tree a handler
 *   asks for is always there; every member the scan picks out (Code,
 *   RequestId, Message, Result.TransactionId, Result.Passed) decodes to
 *   the bytes of cJSON's string for it (cJSON_GetObjectItemCaseSensitive,
 *   up to the first NUL), and the scan finds none that cJSON does not;
 *   the answer ends with the object's own '}' and white space, which the
 *   splice of "Gateway" before the closing brace relies on.
 *
 * Then, with idv_expand_json, every Result.Ext* string that parses as one
 * object or array, with no control byte JSON rules out, becomes a raw
 * member holding that text (cJSON_ReplaceItemViaPointer) and the tree is
 * printed again with cJSON_PrintUnformatted: no crash, no leak, the
 * printed tree parses again as an object with the same Code and has no
 * control byte outside JSON's rule.
 */


#include <stdint.h>
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "ngx_http_idv_json.h"


/* the scan's member and cJSON's string of the same name agree */

static void
fuzz_same(const ngx_http_idv_str_t *raw, cJSON *obj, const char *name)
{
    cJSON   *item;
    size_t   len;
    u_char  *p;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(item)) {
        FUZZ_CHECK(raw->data == NULL);
        return;
    }

    FUZZ_CHECK(raw->data != NULL);

    p = fuzz_alloc(NULL, raw->len + 1);
    len = ngx_http_idv_json_unescape(p, raw->data, raw->len);

    FUZZ_CHECK(len == strlen(item->valuestring));
    FUZZ_CHECK(memcmp(p, item->valuestring, len) == 0);
}


static void
fuzz_expand_json(cJSON *root)
{
    cJSON  *result, *item, *parsed, *raw;

    result = cJSON_GetObjectItemCaseSensitive(root, "Result");

    if (!cJSON_IsObject(result)) {
        return;
    }

    for (item = result->child; item; item = item->next) {

        if (!cJSON_IsString(item) || item->string == NULL
            || strncmp(item->string, "Ext", 3) != 0)
        {
            continue;
        }

        if (ngx_http_idv_json_text_strict((u_char *) item->valuestring,
                                          strlen(item->valuestring))
            != 0)
        {
            continue;
        }

        parsed = cJSON_ParseWithOpts(item->valuestring, NULL, 1);

        if (parsed == NULL) {
            continue;
        }

        if (!cJSON_IsObject(parsed) && !cJSON_IsArray(parsed)) {
            cJSON_Delete(parsed);
            continue;
        }

        cJSON_Delete(parsed);

        raw = cJSON_CreateRaw(item->valuestring);

        if (raw == NULL) {
            continue;
        }

        raw->string = item->string;
        item->string = NULL;

        FUZZ_CHECK(cJSON_ReplaceItemViaPointer(result, item, raw));
        item = raw;
    }
}


/* the deepest nesting of arrays and objects in a JSON text */

static size_t
fuzz_depth(const char *p)
{
    size_t  depth, max;
    int     str;

    depth = 0;
    max = 0;
    str = 0;

    for ( /* void */ ; *p; p++) {

        if (str) {
            if (*p == '\\' && p[1]) {
                p++;

            } else if (*p == '"') {
                str = 0;
            }

            continue;
        }

        if (*p == '"') {
            str = 1;

        } else if (*p == '[' || *p == '{') {
            if (++depth > max) {
                max = depth;
            }

        } else if (*p == ']' || *p == '}') {
            depth--;
        }
    }

    return max;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                     *body, *printed, *code;
    cJSON                    *root, *result, *again;
    const char               *end, *last;
    ngx_http_idv_envelope_t   env;

    body = (char *) fuzz_dup(data, size);

    if (ngx_http_idv_json_envelope((u_char *) body, size, &env) != 0) {
        fuzz_free_all();
        return 0;
    }

    root = cJSON_ParseWithLengthOpts(body, size, &end, 0);

    FUZZ_CHECK(root != NULL);
    FUZZ_CHECK(cJSON_IsObject(root));

    /* the object's own '}' is the last one: white space after it */

    last = body + size;
    while (last > body && last[-1] != '}') {
        FUZZ_CHECK(last[-1] == ' ' || last[-1] == '\t' || last[-1] == '\r'
                   || last[-1] == '\n');
        last--;
    }

    FUZZ_CHECK(last == end);

    fuzz_same(&env.code, root, "Code");
    fuzz_same(&env.request_id, root, "RequestId");
    fuzz_same(&env.message, root, "Message");

    result = cJSON_GetObjectItemCaseSensitive(root, "Result");

    if (cJSON_IsObject(result)) {
        fuzz_same(&env.transaction_id, result, "TransactionId");
        fuzz_same(&env.passed, result, "Passed");

    } else {
        FUZZ_CHECK(env.transaction_id.data == NULL);
        FUZZ_CHECK(env.passed.data == NULL);
    }

    /* idv_expand_json on */

    code = strdup(cJSON_GetObjectItemCaseSensitive(root, "Code")
                  ->valuestring);
    FUZZ_CHECK(code != NULL);

    fuzz_expand_json(root);

    printed = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    FUZZ_CHECK(printed != NULL);

    /* the raw members too: nothing a strict JSON reader would refuse */
    FUZZ_CHECK(ngx_http_idv_json_text_strict((u_char *) printed,
                                             strlen(printed))
               == 0);

    again = cJSON_Parse(printed);

    if (again == NULL) {
        /* only an expansion past cJSON's own nesting limit may do that */
        FUZZ_CHECK(fuzz_depth(printed) > CJSON_NESTING_LIMIT);
        goto done;
    }

    FUZZ_CHECK(cJSON_IsObject(again));
    FUZZ_CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(again, "Code")));
    FUZZ_CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(again, "Code")
                      ->valuestring, code) == 0);

    cJSON_Delete(again);

done:

    cJSON_free(printed);
    free(code);
    fuzz_free_all();

    return 0;
}
