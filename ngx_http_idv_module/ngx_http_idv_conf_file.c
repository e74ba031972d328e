
/*
 * ngx_http_idv_module: the secrets files read at configuration time.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_idv_conf_file.h"


#define ngx_http_idv_conf_file_blank(c)                                      \
    ((c) == ' ' || (c) == '\t' || (c) == '\r')


static ngx_int_t ngx_http_idv_conf_file_read(ngx_conf_t *cf,
    ngx_http_idv_conf_file_t *file, const char *directive, ngx_str_t *name,
    size_t max);
static void ngx_http_idv_conf_file_access(ngx_http_idv_conf_file_t *file,
    ngx_file_info_t *fi);
static const char *ngx_http_idv_conf_file_rw(ngx_uint_t mode, ngx_uint_t r,
    ngx_uint_t w);


ngx_int_t
ngx_http_idv_conf_file_parse(ngx_conf_t *cf, const char *directive,
    ngx_str_t *name, size_t max, ngx_http_idv_conf_file_handler_pt handler,
    void *data)
{
    ngx_int_t                 rc;
    ngx_http_idv_conf_file_t  file;

    if (ngx_http_idv_conf_file_read(cf, &file, directive, name, max)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = handler(&file, data);

    /* the bytes held secrets: do not leave them in memory */
    ngx_explicit_memzero(file.start, file.end - file.start);

    return rc;
}


static ngx_int_t
ngx_http_idv_conf_file_read(ngx_conf_t *cf, ngx_http_idv_conf_file_t *file,
    const char *directive, ngx_str_t *name, size_t max)
{
    u_char           *buf;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    ngx_memzero(file, sizeof(ngx_http_idv_conf_file_t));

    file->cf = cf;
    file->directive = directive;
    file->name = *name;

    if (ngx_conf_full_name(cf->cycle, &file->name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    /* non-blocking: a FIFO in the file's place must not hang a reload */

    fd = ngx_open_file(file->name.data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot open \"%V\"", directive, &file->name);
        return NGX_ERROR;
    }

    /* the open descriptor's: what is checked is what is read */

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot read \"%V\"", directive, &file->name);
        goto failed;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: \"%V\" is not a regular file",
                           directive, &file->name);
        goto failed;
    }

    if (ngx_file_size(&fi) > (off_t) max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: \"%V\" is larger than %uz%c",
                           directive, &file->name,
                           max % (1024 * 1024) ? max / 1024
                                               : max / (1024 * 1024),
                           max % (1024 * 1024) ? 'k' : 'm');
        goto failed;
    }

    ngx_http_idv_conf_file_access(file, &fi);

    size = (size_t) ngx_file_size(&fi);

    buf = ngx_pnalloc(cf->temp_pool, size + 1);
    if (buf == NULL) {
        goto failed;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot read \"%V\"", directive, &file->name);
        goto failed;
    }

    (void) ngx_close_file(fd);

    file->start = buf;
    file->end = buf + n;
    file->pos = buf;

    return NGX_OK;

failed:

    (void) ngx_close_file(fd);

    return NGX_ERROR;
}


/*
 * The file is for the process that loads the configuration, not for the
 * workers.  Other users are warned about always.  The workers' user and
 * group only when root loads the configuration: otherwise the workers are
 * the loading user, whom no mode keeps out.  The workers are those of a
 * "user" directive read before, else nginx's default ones.
 */

static void
ngx_http_idv_conf_file_access(ngx_http_idv_conf_file_t *file,
    ngx_file_info_t *fi)
{
    ngx_uint_t         mode;
#if !(NGX_WIN32)
    u_char            *p, num[NGX_INT_T_LEN];
    ngx_str_t          group;
    const char        *user;
    ngx_uid_t          uid;
    ngx_gid_t          gid;
    struct group      *grp;
    struct passwd     *pwd;
    ngx_core_conf_t   *ccf;
#endif

    mode = fi->st_mode;

    if (mode & (S_IROTH|S_IWOTH)) {
        ngx_conf_log_error(NGX_LOG_WARN, file->cf, 0,
                           "%s: \"%V\" is %s by other users; "
                           "chmod 600 or 640 it", file->directive,
                           &file->name,
                           ngx_http_idv_conf_file_rw(mode, S_IROTH, S_IWOTH));
    }

#if !(NGX_WIN32)

    if (geteuid() != 0) {
        return;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(file->cf->cycle->conf_ctx,
                                           ngx_core_module);

    if (ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        user = ccf->username;
        uid = ccf->user;
        gid = ccf->group;

    } else {
        /* without them nginx refuses to start anyway */

        pwd = getpwnam(NGX_USER);
        grp = getgrnam(NGX_GROUP);

        if (pwd == NULL || grp == NULL) {
            return;
        }

        user = NGX_USER;
        uid = pwd->pw_uid;
        gid = grp->gr_gid;
    }

    if (uid == 0) {
        return;
    }

    if (fi->st_uid == uid) {
        ngx_conf_log_error(NGX_LOG_WARN, file->cf, 0,
                           "%s: \"%V\" belongs to user \"%s\", the workers' "
                           "user; chown it to root", file->directive,
                           &file->name, user);
    }

    if (fi->st_gid == gid && (mode & (S_IRGRP|S_IWGRP))) {
        grp = getgrgid(gid);

        if (grp) {
            group.data = (u_char *) grp->gr_name;
            group.len = ngx_strlen(grp->gr_name);

        } else {
            p = ngx_sprintf(num, "%ui", (ngx_uint_t) gid);
            group.data = num;
            group.len = p - num;
        }

        ngx_conf_log_error(NGX_LOG_WARN, file->cf, 0,
                           "%s: \"%V\" is %s by group \"%V\", the workers' "
                           "group; chmod 600 it or give it another group",
                           file->directive, &file->name,
                           ngx_http_idv_conf_file_rw(mode, S_IRGRP, S_IWGRP),
                           &group);
    }

#endif
}


static const char *
ngx_http_idv_conf_file_rw(ngx_uint_t mode, ngx_uint_t r, ngx_uint_t w)
{
    if ((mode & r) && (mode & w)) {
        return "readable and writable";
    }

    return (mode & r) ? "readable" : "writable";
}


ngx_int_t
ngx_http_idv_conf_file_line(ngx_http_idv_conf_file_t *file, ngx_str_t *line)
{
    u_char  *s, *e;

    while (file->pos < file->end) {

        s = file->pos;

        e = ngx_strlchr(s, file->end, '\n');
        if (e == NULL) {
            e = file->end;
        }

        file->pos = (e < file->end) ? e + 1 : e;
        file->line++;

        while (s < e && ngx_http_idv_conf_file_blank(*s)) {
            s++;
        }

        while (e > s && ngx_http_idv_conf_file_blank(e[-1])) {
            e--;
        }

        if (s == e || *s == '#' || *s == ';') {
            continue;
        }

        line->data = s;
        line->len = e - s;

        return NGX_OK;
    }

    return NGX_DONE;
}


ngx_uint_t
ngx_http_idv_conf_file_fields(ngx_str_t *line, ngx_str_t *fields,
    ngx_uint_t max)
{
    u_char      *s, *e, *end;
    ngx_uint_t   n;

    n = 0;
    s = line->data;
    end = line->data + line->len;

    for ( ;; ) {

        while (s < end && ngx_http_idv_conf_file_blank(*s)) {
            s++;
        }

        if (s == end || *s == '#') {
            return n;
        }

        if (n == max) {
            return max + 1;
        }

        e = s;

        while (e < end && !ngx_http_idv_conf_file_blank(*e)) {
            e++;
        }

        fields[n].data = s;
        fields[n].len = e - s;
        n++;

        s = e;
    }
}


void ngx_cdecl
ngx_http_idv_conf_file_error(ngx_http_idv_conf_file_t *file, ngx_uint_t line,
    const char *fmt, ...)
{
    u_char   *p, what[NGX_MAX_CONF_ERRSTR];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(what, what + NGX_MAX_CONF_ERRSTR, fmt, args);
    va_end(args);

    if (line) {
        ngx_conf_log_error(NGX_LOG_EMERG, file->cf, 0, "%s: %V:%ui: %*s",
                           file->directive, &file->name, line,
                           (size_t) (p - what), what);
        return;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, file->cf, 0, "%s: \"%V\" %*s",
                       file->directive, &file->name, (size_t) (p - what),
                       what);
}

