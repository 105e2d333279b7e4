/*
 * The core functions behind the command-line tool (bin/waithandle) and the
 * facade's inspect and list: the descriptors that keep a hold alive in a
 * command the tool runs, and a look at objects of any kind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lglue.h"

/*
 * core.slot_fd(obj) -> registry_fd, object_fd; or nil if this process holds no slot in the
 * object's directory. A process that inherits duplicates of both keeps this process's holds
 * alive (the registry slot's OFD lock) and the object's file in place (its "in use" lock).
 */
int wh_l_slot_fd(lua_State *L)
{
    struct wh_obj *o = wh_lua_checkobj(L, 1);
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
    struct wh_dir *d = wh_dir_open(path, -1, 0666, &e);
    if (d == NULL && !(e.code == WH_EOS && e.errnum == ENOENT))
        wh_lua_raise(L, &e, name);
    return d;
}

/* core.inspect(dir, name) -> info table with kind (and max_count for a semaphore), or nil if
 * there is no such object. */
int wh_l_inspect(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    struct wh_dir *d;
    struct wh_info in;
    struct wh_err e;
    uint32_t kind, max_count;
    int r;

    luaL_argcheck(L, wh_name_valid(name, len), 2, "not a valid escaped name");
    d = existing_dir(L, dir, name);
    r = d == NULL ? 0 : wh_inspect(d, name, &kind, &max_count, &in, &e);
    if (r < 0)
        return wh_lua_raise(L, &e, name);
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    wh_lua_push_info(L, d, kind, &in);
    lua_pushstring(L, wh_kind_name(kind));
    lua_setfield(L, -2, "kind");
    if (kind == WH_KIND_SEMAPHORE) {
        lua_pushinteger(L, (lua_Integer)max_count);
        lua_setfield(L, -2, "max_count");
    }
    return 1;
}

/* core.list(dir) -> array of the names of the regular files in dir that do not start with '.'
 * (in directory order; empty if dir does not exist). */
int wh_l_list(lua_State *L)
{
    struct wh_dir *d = existing_dir(L, luaL_checkstring(L, 1), NULL);
    struct dirent *ent;
    DIR *dp;
    int fd, n = 0;

    lua_newtable(L);
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
        return wh_lua_raise(L, &e, NULL);
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
        lua_rawseti(L, -2, ++n);
    }
    closedir(dp);
    return 1;
}
