# fuzz_auth: Authorization header values into auth_check (HS256). Built only with FUZZ=ON;
# the bounded ctest run is registered by this directory's CMakeLists.txt, not here.
# Seeds: ${CMAKE_CURRENT_SOURCE_DIR}/corpus/auth
add_executable(fuzz_auth ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_auth.c)
target_link_libraries(fuzz_auth PRIVATE userdata_transport)
target_link_options(fuzz_auth PRIVATE -fsanitize=fuzzer)
