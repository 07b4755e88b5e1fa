/*
 * reflow_shm: the Node worker's window on the shared ring region.
 *
 * Node cannot map physical memory by itself; this Node-API addon does the
 * three things the JavaScript SDK cannot:
 *
 *   map(addr, size[, path])
 *                    maps `size` bytes at `addr` of `path` (default
 *                    /dev/mem: guest physical memory; in a process
 *                    worker's jail the ring's memfd, /proc/self/fd/3) and
 *                    returns them as an ArrayBuffer over the mapping
 *                    itself, so records are read and written in place
 *                    (zero copies);
 *   crc32(view, crc) zlib's CRC-32 of a TypedArray or Buffer, continuing
 *                    from `crc` (Node 18 has no zlib.crc32);
 *   reseed()         reseeds OpenSSL's random generator from the kernel, so
 *                    clones restored from one snapshot do not share
 *                    crypto.randomBytes() streams. Returns false where
 *                    OpenSSL is not found;
 *   keepMemory()     makes glibc's malloc serve every allocation from its
 *                    heap and never give memory back (mmap threshold
 *                    512 MiB, trim threshold 1 GiB), so memory the warm-up
 *                    touched before the golden snapshot is reused by the
 *                    clones instead of faulted in again. V8's optimizing
 *                    compiler mallocs its zones and frees them after each
 *                    compile: with glibc's defaults each compile mapped and
 *                    unmapped them, and every page fault is emulated guest
 *                    kernel work on kvm_pvm hosts (over a second of stalls
 *                    in a clone's first 20,000 messages, Intel Xeon).
 *                    Returns whether glibc took both settings.
 *
 * Node-API is a stable C ABI; the few declarations used are written out
 * below (as documented in Node's node_api.h), so the addon builds with any C
 * compiler and no Node headers. Built by build-node.sh at image build time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status; /* napi_ok == 0 */
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
typedef void (*napi_finalize)(napi_env, void *data, void *hint);

napi_status napi_get_cb_info(napi_env, napi_callback_info, size_t *argc, napi_value *argv,
                             napi_value *this_arg, void **data);
napi_status napi_get_value_int64(napi_env, napi_value, int64_t *);
napi_status napi_get_value_string_utf8(napi_env, napi_value, char *buf, size_t bufsize,
                                       size_t *result);
napi_status napi_get_value_uint32(napi_env, napi_value, uint32_t *);
napi_status napi_create_uint32(napi_env, uint32_t, napi_value *);
napi_status napi_get_boolean(napi_env, int, napi_value *);
napi_status napi_create_external_arraybuffer(napi_env, void *data, size_t length,
                                             napi_finalize, void *hint, napi_value *);
napi_status napi_get_typedarray_info(napi_env, napi_value, int *type, size_t *length,
                                     void **data, napi_value *arraybuffer, size_t *byte_offset);
napi_status napi_is_typedarray(napi_env, napi_value, int *);
napi_status napi_create_function(napi_env, const char *name, size_t length, napi_callback,
                                 void *data, napi_value *);
napi_status napi_set_named_property(napi_env, napi_value object, const char *name, napi_value);
napi_status napi_throw_error(napi_env, const char *code, const char *msg);

/* napi_typedarray_type: element sizes in declaration order. */
static const size_t ELEMENT_SIZE[] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8};
#define TYPEDARRAY_KINDS (sizeof ELEMENT_SIZE / sizeof ELEMENT_SIZE[0])

typedef unsigned long (*crc32_fn)(unsigned long, const unsigned char *, unsigned int);
static crc32_fn zlib_crc32;

static napi_value fail(napi_env env, const char *msg) {
    napi_throw_error(env, "ERR_REFLOW_SHM", msg);
    return NULL;
}

static void unmap(napi_env env, void *data, void *hint) {
    (void)env;
    munmap(data, (size_t)(uintptr_t)hint);
}

static napi_value map_region(napi_env env, napi_callback_info info) {
    size_t argc = 3;
    napi_value argv[3];
    int64_t addr, size;
    char path[64] = "/dev/mem";
    size_t path_len = 0;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc < 2 || argc > 3 ||
        napi_get_value_int64(env, argv[0], &addr) != 0 ||
        napi_get_value_int64(env, argv[1], &size) != 0)
        return fail(env, "map(addr, size[, path]) takes two numbers and a path");
    if (argc == 3 &&
        (napi_get_value_string_utf8(env, argv[2], path, sizeof path, &path_len) != 0 ||
         path_len == 0 || path_len >= sizeof path - 1))
        return fail(env, "map: the path must be a string of 1 to 62 bytes");
    long page = sysconf(_SC_PAGESIZE);
    if (addr < 0 || size <= 0 || addr % page || size % page)
        return fail(env, "map: address and size must be positive multiples of the page size");
    int fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
    if (fd < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "map: cannot open %s: %s", path, strerror(errno));
        return fail(env, msg);
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)addr);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        char msg[160];
        snprintf(msg, sizeof msg, "map: mmap of %s failed: %s", path, strerror(err));
        return fail(env, msg);
    }
    napi_value buffer;
    if (napi_create_external_arraybuffer(env, p, (size_t)size, unmap, (void *)(uintptr_t)size,
                                         &buffer) != 0) {
        munmap(p, (size_t)size);
        return fail(env, "map: cannot wrap the mapping in an ArrayBuffer");
    }
    return buffer;
}

static napi_value crc32(napi_env env, napi_callback_info info) {
    size_t argc = 2;
    napi_value argv[2];
    int is_array = 0, type;
    uint32_t crc;
    size_t length;
    void *data;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != 0 || argc != 2 ||
        napi_is_typedarray(env, argv[0], &is_array) != 0 || !is_array ||
        napi_get_value_uint32(env, argv[1], &crc) != 0)
        return fail(env, "crc32(view, crc) takes a TypedArray and a number");
    if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != 0 ||
        type < 0 || (size_t)type >= TYPEDARRAY_KINDS)
        return fail(env, "crc32: unsupported TypedArray");
    size_t bytes = length * ELEMENT_SIZE[type];
    const unsigned char *p = data;
    unsigned long c = crc;
    while (bytes > 0) {
        unsigned int n = bytes > (1u << 30) ? (1u << 30) : (unsigned int)bytes;
        c = zlib_crc32(c, p, n);
        p += n;
        bytes -= n;
    }
    napi_value out;
    napi_create_uint32(env, (uint32_t)c, &out);
    return out;
}

static napi_value reseed(napi_env env, napi_callback_info info) {
    (void)info;
    int (*rand_poll)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "RAND_poll");
    napi_value out;
    napi_get_boolean(env, rand_poll != NULL && rand_poll() == 1, &out);
    return out;
}

static napi_value keep_memory(napi_env env, napi_callback_info info) {
    (void)info;
    int ok = mallopt(M_MMAP_THRESHOLD, 512 * 1024 * 1024) == 1 &&
             mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1;
    napi_value out;
    napi_get_boolean(env, ok, &out);
    return out;
}

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
    napi_value fn;
    return napi_create_function(env, name, strlen(name), cb, NULL, &fn) != 0 ||
           napi_set_named_property(env, exports, name, fn) != 0;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
    zlib_crc32 = (crc32_fn)dlsym(RTLD_DEFAULT, "crc32");
    if (zlib_crc32 == NULL) {
        void *z = dlopen("libz.so.1", RTLD_NOW);
        zlib_crc32 = z ? (crc32_fn)dlsym(z, "crc32") : NULL;
    }
    if (zlib_crc32 == NULL)
        return fail(env, "reflow_shm: zlib's crc32 is not available (libz.so.1)");
    if (export_fn(env, exports, "map", map_region) || export_fn(env, exports, "crc32", crc32) ||
        export_fn(env, exports, "reseed", reseed) || export_fn(env, exports, "keepMemory", keep_memory))
        return fail(env, "reflow_shm: cannot export its functions");
    return exports;
}
