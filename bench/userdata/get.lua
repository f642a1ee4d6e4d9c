-- wrk -s get.lua: GET /api/v1/users/{id} for a random seeded user. See common.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
   return wrk.format("GET", "/api/v1/users/" .. random_user().id)
end
