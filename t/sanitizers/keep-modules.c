
/*
 * A debugging aid for ./build.sh test --asan with IDV_ASAN_KEEP_MODULES=1:
 * preloaded into the sanitizer nginx, it makes dlclose() do nothing.
 *
 * nginx unloads the dynamic module (and with it libcjson) when a process
 * destroys its cycle at exit, before LeakSanitizer looks: the module's
 * frames in a leak report are then "<unknown module>".  With the module
 * kept, they have names and lines.
 *
 * Not for the normal run: whatever only the module's static variables
 * point to stays reachable, so a leak of an object an exit hook should
 * free would go unreported.
 */


#include <dlfcn.h>


int
dlclose(void *handle)
{
    (void) handle;

    return 0;
}
