// The doctest runner for ming-tests; each TEST_CASE becomes one ctest test.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
