/*
 * Looking at a lock directory without using it (inspect and list, module
 * functions and provider methods), and the descriptors that keep a hold alive
 * in a command the command-line tool (bin/waithandle) runs.
 */
#include <dirent.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lcore.h"

/*
 * core.slot_fd(obj) -> registry_fd, object_fd; or nil if this process holds no slot in the
 * object's directory. A process that inherits duplicates of both keeps this process's holds
 * alive (the registry slot's OFD lock) and the object's file in place (its "in use" lock).
 */
int wh_l_slot_fd(lua_State *L)
{
    struct lobj *u = wh_toobj(L, 1, 0);
    struct wh_obj *o;
    if (u == NULL)
        return wh_argerror(L, 1, 1, "slot_fd", "waithandles object expected, got %s",
                           wh_typename(L, 1));
    o = u->o;
    int fd = wh_dir_slot_fd(o->dir);
    if (fd < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, fd);
    lua_pushinteger(L, o->fd);
    return 2;
}

/* The lock directory `path` if it exists (never created); NULL if it does not. */
static struct wh_dir *existing_dir(lua_State *L, const char *path, const char *name)
{
    struct wh_err e;
    struct wh_dir *d = wh_dir_open(path, -1, &e);
    if (d == NULL && !(e.code == WH_EOS && e.errnum == ENOENT))
        wh_raise(L, &e, name);
    return d;
}

static const struct wh_sig sig_inspect = {"inspect", S_NONE, 0, 0, "sc"};
static const struct wh_sig sig_p_inspect = {"inspect", S_PROVIDER, 0, 0, "sc"};
static const struct wh_sig sig_list = {"list", S_NONE, 0, 0, "c"};
static const struct wh_sig sig_p_list = {"list", S_PROVIDER, 0, 0, "c"};

/* The provider of a module function (upvalue 1) or provider method (argument 1), pushed if it is
 * an upvalue; its stack index. */
static int provider_of(lua_State *L, const struct wh_sig *sig)
{
    if (sig->self == S_PROVIDER)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    return lua_gettop(L);
}

/* inspect(name [, opts]) -> info() of whatever kind of object `name` is, with kind (and
 * max_count), name and path; nil if there is no such object. */
static int inspect(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    struct wh_settings s;
    struct wh_info in;
    struct wh_err e;
    struct wh_dir *d;
    uint32_t kind, max_count;
    char buf[WH_NAME_MAX + 1];
    const char *name;
    int r, prov;

    wh_checkargs(L, sig, 1, 1, &a);
    prov = provider_of(L, sig);
    wh_settings(L, prov, a.opts, &s);
    name = wh_object_name(L, sig->self == S_PROVIDER ? 2 : 1, s.exact, buf);
    d = existing_dir(L, s.dir, name);
    r = d == NULL ? 0 : wh_inspect(d, name, &kind, &max_count, &in, &e);
    if (r < 0)
        return wh_raise(L, &e, name);
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    if (kind == WH_KIND_EVENT) {
        lua_createtable(L, 0, 5);
        lua_pushboolean(L, in.ev_set != 0);
        lua_setfield(L, -2, "set");
        lua_pushboolean(L, max_count == WH_EVENT_AUTO);
        lua_setfield(L, -2, "auto_reset");
    } else {
        wh_push_info(L, d, kind, &in);
    }
    lua_pushstring(L, wh_kind_name(kind));
    lua_setfield(L, -2, "kind");
    if (kind == WH_KIND_SEMAPHORE) {
        lua_pushinteger(L, (lua_Integer)max_count);
        lua_setfield(L, -2, "max_count");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushfstring(L, "%s/%s", strcmp(s.dir, "/") == 0 ? "" : s.dir, name);
    lua_setfield(L, -2, "path");
    return 1;
}

static int m_inspect(lua_State *L) { return inspect(L, &sig_inspect); }
static int p_inspect(lua_State *L) { return inspect(L, &sig_p_inspect); }

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* list([opts]) -> the names of the regular files in the lock directory that do not start with
 * '.' (objects, and whatever else was put there), in byte order; empty if it does not exist. */
static int list(lua_State *L, const struct wh_sig *sig)
{
    struct wh_args a;
    struct wh_settings s;
    struct wh_dir *d;
    struct dirent *ent;
    DIR *dp;
    int fd, n = 0, t;

    wh_checkargs(L, sig, 1, 1, &a);
    wh_settings(L, provider_of(L, sig), a.opts, &s);
    d = existing_dir(L, s.dir, NULL);
    lua_newtable(L);
    t = lua_gettop(L);
    if (d == NULL)
        return 1;
    /* A descriptor of our own: readdir moves the offset of the description it reads. */
    fd = openat(wh_dir_fd(d), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    dp = fd < 0 ? NULL : fdopendir(fd);
    if (dp == NULL) {
        struct wh_err e;
        wh_fail(&e, WH_EOS, errno, "cannot read lock directory %s: %s", wh_dir_path(d),
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return wh_raise(L, &e, NULL);
    }
    while ((ent = readdir(dp)) != NULL) {
        struct stat st;
        if (ent->d_name[0] == '.')
            continue;
        if (ent->d_type != DT_REG &&
            (ent->d_type != DT_UNKNOWN ||
             fstatat(dirfd(dp), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
             !S_ISREG(st.st_mode)))
            continue;
        lua_pushstring(L, ent->d_name);
        lua_rawseti(L, t, ++n);
    }
    closedir(dp);
    {
        /* Byte order (the names are anchored in t while they are sorted). */
        const char **v = lua_newuserdata(L, sizeof *v * (size_t)(n ? n : 1));
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, t, i + 1);
            v[i] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        qsort(v, (size_t)n, sizeof *v, cmp_str);
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            lua_pushstring(L, v[i]);
            lua_rawseti(L, -2, i + 1);
        }
    }
    return 1;
}

static int m_list(lua_State *L) { return list(L, &sig_list); }
static int p_list(lua_State *L) { return list(L, &sig_p_list); }

/* Module functions over the default provider (upvalue 1). */
const luaL_Reg wh_look_funcs[] = {{"inspect", m_inspect}, {"list", m_list}, {NULL, NULL}};
const luaL_Reg wh_look_methods[] = {{"inspect", p_inspect}, {"list", p_list}, {NULL, NULL}};
