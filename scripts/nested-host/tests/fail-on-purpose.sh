# Runs only with TERN_NESTED_FAIL=1: proves a failing test makes the harness fail.
echo "failing on purpose (TERN_NESTED_FAIL=1)"
exit 1
