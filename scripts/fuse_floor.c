/* The FUSE floor for `make bench`: the least a FUSE server can do to serve one file.
 *
 * One file, `value`, at the mount root, with the caching imdsfs uses for an unchanged value:
 * entry and attribute timeouts of 60 s, keep_cache on open, no flush. Single-threaded, like
 * the imdsfs daemon. What a warm read costs here is what the kernel and libfuse cost; the
 * rest of imdsfs's figure is Python (pyfuse3, trio, our handlers).
 *
 * Usage: fuse_floor MOUNTPOINT FILE   (serves FILE's bytes; foreground; unmount to stop)
 */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *data;
static size_t size;

static void fill(fuse_ino_t ino, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)size;
    }
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct fuse_entry_param e;
    if (parent != FUSE_ROOT_ID || strcmp(name, "value") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    memset(&e, 0, sizeof e);
    e.ino = 2;
    e.attr_timeout = e.entry_timeout = 60.0;
    fill(e.ino, &e.attr);
    fuse_reply_entry(req, &e);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct stat st;
    (void)fi;
    fill(ino, &st);
    fuse_reply_attr(req, &st, 60.0);
}

static void floor_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (ino != 2) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t want, off_t off,
                       struct fuse_file_info *fi) {
    (void)ino;
    (void)fi;
    if ((size_t)off >= size)
        want = 0;
    else if (want > size - (size_t)off)
        want = size - (size_t)off;
    fuse_reply_buf(req, data + off, want);
}

static void floor_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS); /* as pyfuse3's default: the kernel stops sending FLUSH */
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = floor_lookup,
    .getattr = floor_getattr,
    .open = floor_open,
    .read = floor_read,
    .flush = floor_flush,
};

int main(int argc, char *argv[]) {
    char *fuse_argv[] = {argv[0]};
    struct fuse_args args = FUSE_ARGS_INIT(1, fuse_argv);
    struct fuse_session *se;
    FILE *file;
    int ret;

    if (argc != 3) {
        fprintf(stderr, "usage: %s MOUNTPOINT FILE\n", argv[0]);
        return 2;
    }
    file = fopen(argv[2], "rb");
    if (file == NULL || fseek(file, 0, SEEK_END) != 0) {
        perror(argv[2]);
        return 1;
    }
    size = (size_t)ftell(file);
    rewind(file);
    data = malloc(size + 1);
    if (data == NULL || fread(data, 1, size, file) != size) {
        perror(argv[2]);
        return 1;
    }
    fclose(file);

    se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (se == NULL || fuse_session_mount(se, argv[1]) != 0)
        return 1;
    ret = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return ret < 0 ? 1 : 0;
}
