-- wrk -s put.lua: PUT /api/v1/users/{id} for a random seeded user, a full replace without
-- password and without If-Match that keeps every field as seeded except full_name, which
-- gets a random value (a PUT that changes nothing is answered without a write).
-- See common.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

wrk.headers["Content-Type"] = "application/json"

function request()
   local u = random_user()
   local body = string.format(
      '{"username":"%s","email":"%s","full_name":"Bench User %d",' ..
      '"date_of_birth":"1990-01-01","address":"1 Bench Street, Testville",' ..
      '"locale":"en","status":"CONFIRMED"}',
      u.username, u.email, math.random(1, 2000000000))
   return wrk.format("PUT", "/api/v1/users/" .. u.id, nil, body)
end
