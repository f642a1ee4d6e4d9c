# test_auth: transport/auth.c (Bearer JWT checks). Included by this directory's CMakeLists.txt.
add_cmocka_test(NAME test_auth SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_auth.c
  LIBS userdata_transport Threads::Threads LABELS unit)
target_compile_definitions(test_auth PRIVATE TEST_KEYS_DIR="${CMAKE_CURRENT_SOURCE_DIR}/keys")
