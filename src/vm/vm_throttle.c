/* Auto-converge: a thread that makes every vCPU sleep a share of each time slice, so that a
 * guest that dirties memory faster than a migration's link carries it slows down. */
#include "clock/clock.h"
#include "err/err.h"
#include "vm/vm_internal.h"

/* Each vCPU runs VM_THROTTLE_SLICE_NS, then sleeps pct/(100-pct) of that, so it gets
 * (100-pct)% of its time. Short slices keep the guest responsive while it is slowed. */
#define VM_THROTTLE_SLICE_NS 10000000ull

void vm_throttle_init(struct vm *vm)
{
    pthread_mutex_init(&vm->throttle_lock, NULL);
    clock_cond_init(&vm->throttle_cond);
}

void vm_throttle_destroy(struct vm *vm)
{
    pthread_mutex_destroy(&vm->throttle_lock);
    pthread_cond_destroy(&vm->throttle_cond);
}

static void *vm_throttle_thread(void *arg)
{
    struct vm *vm = arg;
    pthread_setname_np(pthread_self(), "throttle");
    pthread_mutex_lock(&vm->throttle_lock);
    while (vm->throttle_pct) {
        uint64_t sleep_ns = VM_THROTTLE_SLICE_NS * vm->throttle_pct / (100 - vm->throttle_pct);
        for (unsigned i = 0; i < vm->cpu_count; i++)
            vcpu_throttle(vm->vcpus[i], sleep_ns);
        struct timespec ts = clock_deadline(sleep_ns + VM_THROTTLE_SLICE_NS);
        pthread_cond_timedwait(&vm->throttle_cond, &vm->throttle_lock, &ts);
    }
    pthread_mutex_unlock(&vm->throttle_lock);
    return NULL;
}

int vm_set_throttle(struct vm *vm, unsigned pct)
{
    if (pct > 99)
        pct = 99;
    pthread_mutex_lock(&vm->throttle_lock);
    vm->throttle_pct = pct;
    pthread_cond_broadcast(&vm->throttle_cond);
    bool join = !pct && vm->throttle_running;
    int rc = 0;
    if (pct && !vm->throttle_running) {
        rc = pthread_create(&vm->throttle_thread, NULL, vm_throttle_thread, vm);
        if (rc)
            rc = err_sys(-rc, "cannot start the throttle thread");
        else
            vm->throttle_running = true;
    }
    if (join)
        vm->throttle_running = false;
    pthread_mutex_unlock(&vm->throttle_lock);
    if (join) {
        pthread_join(vm->throttle_thread, NULL);
        for (unsigned i = 0; i < vm->cpu_count; i++)
            vcpu_throttle(vm->vcpus[i], 0);
    }
    return rc;
}

unsigned vm_throttle(struct vm *vm)
{
    pthread_mutex_lock(&vm->throttle_lock);
    unsigned pct = vm->throttle_pct;
    pthread_mutex_unlock(&vm->throttle_lock);
    return pct;
}
