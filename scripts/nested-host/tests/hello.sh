# tern runs the hello guest on the nested host's VT-x KVM.
out=$(tern run --mem 64M --serial stdio --kernel /guests/hello.elf </dev/null 2>&1)
rc=$?
echo "$out"
[ $rc = 0 ] || { echo "tern exited $rc"; exit 1; }
echo "$out" | grep -q "hello from a tern guest: 1 vCPU(s), 64 MiB of RAM" || { echo "no hello line"; exit 1; }
