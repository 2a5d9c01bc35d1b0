#include "carchive.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

// The functions corral calls, resolved from libarchive.so.13 once.
static struct {
    void (*entry_copy_hardlink)(struct archive_entry *e, const char *v);
    void (*entry_copy_pathname)(struct archive_entry *e, const char *v);
    void (*entry_copy_symlink)(struct archive_entry *e, const char *v);
    __LA_MODE_T (*entry_filetype)(struct archive_entry *e);
    void (*entry_free)(struct archive_entry *e);
    la_int64_t (*entry_gid)(struct archive_entry *e);
    const char *(*entry_hardlink)(struct archive_entry *e);
    time_t (*entry_mtime)(struct archive_entry *e);
    long (*entry_mtime_nsec)(struct archive_entry *e);
    struct archive_entry *(*entry_new)(void);
    const char *(*entry_pathname)(struct archive_entry *e);
    __LA_MODE_T (*entry_perm)(struct archive_entry *e);
    void (*entry_set_filetype)(struct archive_entry *e, unsigned int v);
    void (*entry_set_gid)(struct archive_entry *e, la_int64_t v);
    void (*entry_set_mtime)(struct archive_entry *e, time_t s, long ns);
    void (*entry_set_perm)(struct archive_entry *e, __LA_MODE_T v);
    void (*entry_set_size)(struct archive_entry *e, la_int64_t v);
    void (*entry_set_uid)(struct archive_entry *e, la_int64_t v);
    la_int64_t (*entry_size)(struct archive_entry *e);
    const char *(*entry_symlink)(struct archive_entry *e);
    la_int64_t (*entry_uid)(struct archive_entry *e);
    const char *(*error_string)(struct archive *a);
    la_ssize_t (*read_data)(struct archive *a, void *buffer, size_t size);
    int (*read_data_skip)(struct archive *a);
    int (*read_free)(struct archive *a);
    struct archive *(*read_new)(void);
    int (*read_next_header)(struct archive *a, struct archive_entry **e);
    int (*read_open)(struct archive *a, void *client, archive_open_callback *on_open, archive_read_callback *on_read, archive_close_callback *on_close);
    int (*read_support_format_empty)(struct archive *a);
    int (*read_support_format_tar)(struct archive *a);
    int (*write_close)(struct archive *a);
    la_ssize_t (*write_data)(struct archive *a, const void *buffer, size_t size);
    int (*write_fail)(struct archive *a);
    int (*write_finish_entry)(struct archive *a);
    int (*write_free)(struct archive *a);
    int (*write_header)(struct archive *a, struct archive_entry *e);
    struct archive *(*write_new)(void);
    int (*write_open2)(struct archive *a, void *client, archive_open_callback *on_open, archive_write_callback *on_write, archive_close_callback *on_close, archive_free_callback *on_free);
    int (*write_set_format_pax_restricted)(struct archive *a);
    int (*write_set_format_ustar)(struct archive *a);
    void (*set_error)(struct archive *, int, const char *, ...);
} archive;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];
static int load_status = -1;

#define RESOLVE(field, name)                                                                         \
    do {                                                                                             \
        *(void **)(&archive.field) = dlsym(library, name);                                           \
        if (archive.field == NULL) {                                                                 \
            snprintf(load_error, sizeof(load_error), "libarchive.so.13 has no %s: it is too old", name); \
            return;                                                                                  \
        }                                                                                            \
    } while (0)

static void load(void) {
    void *library = dlopen("libarchive.so.13", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        const char *why = dlerror();
        snprintf(load_error, sizeof(load_error), "cannot load libarchive.so.13: %s", why ? why : "unknown error");
        return;
    }
    RESOLVE(entry_copy_hardlink, "archive_entry_copy_hardlink");
    RESOLVE(entry_copy_pathname, "archive_entry_copy_pathname");
    RESOLVE(entry_copy_symlink, "archive_entry_copy_symlink");
    RESOLVE(entry_filetype, "archive_entry_filetype");
    RESOLVE(entry_free, "archive_entry_free");
    RESOLVE(entry_gid, "archive_entry_gid");
    RESOLVE(entry_hardlink, "archive_entry_hardlink");
    RESOLVE(entry_mtime, "archive_entry_mtime");
    RESOLVE(entry_mtime_nsec, "archive_entry_mtime_nsec");
    RESOLVE(entry_new, "archive_entry_new");
    RESOLVE(entry_pathname, "archive_entry_pathname");
    RESOLVE(entry_perm, "archive_entry_perm");
    RESOLVE(entry_set_filetype, "archive_entry_set_filetype");
    RESOLVE(entry_set_gid, "archive_entry_set_gid");
    RESOLVE(entry_set_mtime, "archive_entry_set_mtime");
    RESOLVE(entry_set_perm, "archive_entry_set_perm");
    RESOLVE(entry_set_size, "archive_entry_set_size");
    RESOLVE(entry_set_uid, "archive_entry_set_uid");
    RESOLVE(entry_size, "archive_entry_size");
    RESOLVE(entry_symlink, "archive_entry_symlink");
    RESOLVE(entry_uid, "archive_entry_uid");
    RESOLVE(error_string, "archive_error_string");
    RESOLVE(read_data, "archive_read_data");
    RESOLVE(read_data_skip, "archive_read_data_skip");
    RESOLVE(read_free, "archive_read_free");
    RESOLVE(read_new, "archive_read_new");
    RESOLVE(read_next_header, "archive_read_next_header");
    RESOLVE(read_open, "archive_read_open");
    RESOLVE(read_support_format_empty, "archive_read_support_format_empty");
    RESOLVE(read_support_format_tar, "archive_read_support_format_tar");
    RESOLVE(write_close, "archive_write_close");
    RESOLVE(write_data, "archive_write_data");
    RESOLVE(write_fail, "archive_write_fail");
    RESOLVE(write_finish_entry, "archive_write_finish_entry");
    RESOLVE(write_free, "archive_write_free");
    RESOLVE(write_header, "archive_write_header");
    RESOLVE(write_new, "archive_write_new");
    RESOLVE(write_open2, "archive_write_open2");
    RESOLVE(write_set_format_pax_restricted, "archive_write_set_format_pax_restricted");
    RESOLVE(write_set_format_ustar, "archive_write_set_format_ustar");
    RESOLVE(set_error, "archive_set_error");
    load_status = 0;
}

int corral_archive_load(char *error, size_t capacity) {
    pthread_once(&load_once, load);
    if (load_status != 0 && error != NULL && capacity > 0) {
        snprintf(error, capacity, "%s", load_error);
    }
    return load_status;
}

void corral_archive_entry_copy_hardlink(struct archive_entry *e, const char *v) { archive.entry_copy_hardlink(e, v); }

void corral_archive_entry_copy_pathname(struct archive_entry *e, const char *v) { archive.entry_copy_pathname(e, v); }

void corral_archive_entry_copy_symlink(struct archive_entry *e, const char *v) { archive.entry_copy_symlink(e, v); }

__LA_MODE_T corral_archive_entry_filetype(struct archive_entry *e) { return archive.entry_filetype(e); }

void corral_archive_entry_free(struct archive_entry *e) { archive.entry_free(e); }

la_int64_t corral_archive_entry_gid(struct archive_entry *e) { return archive.entry_gid(e); }

const char *corral_archive_entry_hardlink(struct archive_entry *e) { return archive.entry_hardlink(e); }

time_t corral_archive_entry_mtime(struct archive_entry *e) { return archive.entry_mtime(e); }

long corral_archive_entry_mtime_nsec(struct archive_entry *e) { return archive.entry_mtime_nsec(e); }

struct archive_entry *corral_archive_entry_new(void) { return archive.entry_new(); }

const char *corral_archive_entry_pathname(struct archive_entry *e) { return archive.entry_pathname(e); }

__LA_MODE_T corral_archive_entry_perm(struct archive_entry *e) { return archive.entry_perm(e); }

void corral_archive_entry_set_filetype(struct archive_entry *e, unsigned int v) { archive.entry_set_filetype(e, v); }

void corral_archive_entry_set_gid(struct archive_entry *e, la_int64_t v) { archive.entry_set_gid(e, v); }

void corral_archive_entry_set_mtime(struct archive_entry *e, time_t s, long ns) { archive.entry_set_mtime(e, s, ns); }

void corral_archive_entry_set_perm(struct archive_entry *e, __LA_MODE_T v) { archive.entry_set_perm(e, v); }

void corral_archive_entry_set_size(struct archive_entry *e, la_int64_t v) { archive.entry_set_size(e, v); }

void corral_archive_entry_set_uid(struct archive_entry *e, la_int64_t v) { archive.entry_set_uid(e, v); }

la_int64_t corral_archive_entry_size(struct archive_entry *e) { return archive.entry_size(e); }

const char *corral_archive_entry_symlink(struct archive_entry *e) { return archive.entry_symlink(e); }

la_int64_t corral_archive_entry_uid(struct archive_entry *e) { return archive.entry_uid(e); }

const char *corral_archive_error_string(struct archive *a) { return archive.error_string(a); }

la_ssize_t corral_archive_read_data(struct archive *a, void *buffer, size_t size) { return archive.read_data(a, buffer, size); }

int corral_archive_read_data_skip(struct archive *a) { return archive.read_data_skip(a); }

int corral_archive_read_free(struct archive *a) { return archive.read_free(a); }

struct archive *corral_archive_read_new(void) { return archive.read_new(); }

int corral_archive_read_next_header(struct archive *a, struct archive_entry **e) { return archive.read_next_header(a, e); }

int corral_archive_read_open(struct archive *a, void *client, archive_open_callback *on_open, archive_read_callback *on_read, archive_close_callback *on_close) { return archive.read_open(a, client, on_open, on_read, on_close); }

int corral_archive_read_support_format_empty(struct archive *a) { return archive.read_support_format_empty(a); }

int corral_archive_read_support_format_tar(struct archive *a) { return archive.read_support_format_tar(a); }

int corral_archive_write_close(struct archive *a) { return archive.write_close(a); }

la_ssize_t corral_archive_write_data(struct archive *a, const void *buffer, size_t size) { return archive.write_data(a, buffer, size); }

int corral_archive_write_fail(struct archive *a) { return archive.write_fail(a); }

int corral_archive_write_finish_entry(struct archive *a) { return archive.write_finish_entry(a); }

int corral_archive_write_free(struct archive *a) { return archive.write_free(a); }

int corral_archive_write_header(struct archive *a, struct archive_entry *e) { return archive.write_header(a, e); }

struct archive *corral_archive_write_new(void) { return archive.write_new(); }

int corral_archive_write_open2(struct archive *a, void *client, archive_open_callback *on_open, archive_write_callback *on_write, archive_close_callback *on_close, archive_free_callback *on_free) { return archive.write_open2(a, client, on_open, on_write, on_close, on_free); }

int corral_archive_write_set_format_pax_restricted(struct archive *a) { return archive.write_set_format_pax_restricted(a); }

int corral_archive_write_set_format_ustar(struct archive *a) { return archive.write_set_format_ustar(a); }

void corral_archive_set_error(struct archive *a, int error_number, const char *message) {
    archive.set_error(a, error_number, "%s", message);
}
