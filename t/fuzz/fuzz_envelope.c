
/*
 * libFuzzer target: the upstream answer as the gateway reads it.
 *
 * The parsing lives in nginx glue (ngx_http_idv_handler.c,
 * ngx_http_idv_respond(), and ngx_http_idv_envelope.c,
 * ngx_http_idv_expand_json()), which needs nginx to compile; this target
 * repeats the same cJSON calls in the same order on the same kind of
 * buffer (not NUL-terminated, exactly as long as the answer):
 *
 *   cJSON_ParseWithLength; an object with a string "Code", else "not an
 *   API envelope"; Code and RequestId copied (strlen + memcpy);
 *   Result.Passed read as one character; Result.TransactionId copied;
 *   with idv_expand_json, every Result.Ext* string that parses as one
 *   object or array, with no control byte JSON rules out, becomes a raw
 *   member holding that text (cJSON_ReplaceItemViaPointer) and the tree
 *   is printed again with cJSON_PrintUnformatted.
 *
 * Invariants: no crash, no leak, the printed tree parses again as an
 * object with the same Code and has no control byte outside JSON's rule.
 *
 * Not repeated here: the splice of "Gateway" before the closing brace
 * (ngx_http_idv_send_envelope()), which is nginx buffer code.  The one
 * property it relies on -- the answer ends with the object's own '}',
 * only whitespace after it -- does NOT hold today: cJSON_ParseWithLength
 * accepts bytes after the first value, so '{"Code":"x"} junk}' passes
 * as an envelope and the splice goes after the last '}' of the junk.
 * Build with -DIDV_FUZZ_ENVELOPE_STRICT to check it (it fails at once);
 * see docs/hardening.md.
 */


#include <stdint.h>
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "ngx_http_idv_json.h"


static void
fuzz_copy_string(cJSON *obj, const char *name)
{
    cJSON   *item;
    size_t   len;
    u_char  *p;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(item)) {
        return;
    }

    len = strlen(item->valuestring);
    p = fuzz_alloc(NULL, len + 1);
    memcpy(p, item->valuestring, len);
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


static volatile char  fuzz_passed;


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
    char        *body, *printed, *code;
    cJSON       *root, *result, *passed, *again;
    const char  *end;

    body = (char *) fuzz_dup(data, size);

    root = cJSON_ParseWithLengthOpts(body, size, &end, 0);

    if (root == NULL || !cJSON_IsObject(root)
        || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "Code")))
    {
        cJSON_Delete(root);
        fuzz_free_all();
        return 0;
    }

#ifdef IDV_FUZZ_ENVELOPE_STRICT
    {
        const char  *last;

        /* the splice looks for the last '}' from the end */

        last = body + size;
        while (last > body && last[-1] != '}') {
            last--;
        }

        FUZZ_CHECK(last == end);
    }
#else
    (void) end;
#endif

    fuzz_copy_string(root, "Code");
    fuzz_copy_string(root, "RequestId");

    result = cJSON_GetObjectItemCaseSensitive(root, "Result");
    passed = cJSON_GetObjectItemCaseSensitive(result, "Passed");

    if (cJSON_IsString(passed) && passed->valuestring[0] != '\0'
        && passed->valuestring[1] == '\0')
    {
        fuzz_passed = passed->valuestring[0];
    }

    if (cJSON_IsObject(result)
        && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(result,
                                                           "TransactionId")))
    {
        fuzz_copy_string(result, "TransactionId");
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
