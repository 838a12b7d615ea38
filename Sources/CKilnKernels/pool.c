// A small fork-join thread pool: the caller and (threads - 1) workers share each parallel_for.
//
// On a machine busier than its cores, a worker is sometimes preempted in the middle of a task, and the caller
// then waits for it for a whole scheduler time slice (milliseconds, against tasks of tens of microseconds): two
// threads then run slower than one. The pool notices such stalls and, while they keep coming, runs jobs on the
// caller alone (the workers sleep) for a while: 64 jobs (about half a ResNet-50 run) the first time, twice as
// many each time the stalls come back right after, up to 1024, and 64 again once both threads have run 2048
// jobs without stalling. A burst of stalls on an otherwise quiet machine (a process's first runs on a VM whose
// second CPU was idle) then costs half a run on one thread, not several runs.
//
// Tasks are claimed from one atomic ticket that holds the job's generation and the next task index, so a worker
// that wakes late (descheduled on a busy machine) can never claim a task of a job that is over, and the caller
// never waits for a worker that has not started: it runs whatever is left itself and waits only for tasks
// already running. Workers spin briefly between jobs (consecutive layers follow each other within
// microseconds), then sleep on a condition variable.
#include "CKilnKernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define KILN_MAX_THREADS 64
// Pause iterations a worker spins for before sleeping: a few hundred microseconds.
#define KILN_SPIN_LIMIT 20000
// A wait for a worker's task longer than this means the worker was preempted (tasks take microseconds).
#define KILN_STALL_NS 1000000
// Stalls within this many jobs that switch the pool to the caller alone, and for how many jobs.
#define KILN_STALL_WINDOW 256
#define KILN_STALLS_TO_SERIALIZE 8
// Jobs on the caller alone: the first time, the most, and clean jobs after which it is the first time again.
#define KILN_SERIAL_JOBS_FIRST 64
#define KILN_SERIAL_JOBS_MOST 1024
#define KILN_CLEAN_JOBS 2048

typedef void (*kiln_task_fn)(void *, size_t, int);

static struct {
    int threads;  // including the caller
    int started;  // workers created so far
    // The current job: written by the caller (while the ticket claims nothing) before the generation is
    // published, stable until it is done. Sequentially consistent, so that a worker that reads a newer job's
    // fields also sees that job's ticket and cannot claim a task of the old one with them.
    _Atomic(kiln_task_fn) task;
    _Atomic(void *) context;
    _Atomic size_t count;
    _Atomic unsigned float_mode;  // the caller's floating-point mode (MXCSR), which workers take for the job
    _Atomic uint64_t ticket;   // generation << 32 | next task index
    _Atomic unsigned generation;
    _Atomic size_t done;       // tasks of the current job finished
    _Atomic int sleepers;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    pthread_mutex_t call;  // one parallel_for at a time
    // Stall detection (under `call`).
    unsigned jobs_since_stall;
    unsigned recent_stalls;
    unsigned serial_jobs_left;
    unsigned serial_period;      // jobs on the caller alone the next time stalls keep coming
    unsigned jobs_since_serial;  // parallel jobs since the last serial period
} pool = {
    .threads = 1,
    .serial_period = KILN_SERIAL_JOBS_FIRST,
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .call = PTHREAD_MUTEX_INITIALIZER,
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Claims and runs tasks of job `generation` until none are left (or the job is no longer current).
static void run_tasks(unsigned generation, int thread) {
    const kiln_task_fn task = atomic_load(&pool.task);
    void *const context = atomic_load(&pool.context);
    const size_t count = atomic_load(&pool.count);
    const unsigned mode = atomic_load(&pool.float_mode);
    if (thread != 0 && kiln_float_mode() != mode) kiln_restore_float_mode(mode);
    uint64_t ticket = atomic_load(&pool.ticket);
    for (;;) {
        if ((unsigned)(ticket >> 32) != generation) return;
        const size_t index = (size_t)(ticket & 0xffffffffu);
        if (index >= count) return;
        if (!atomic_compare_exchange_weak(&pool.ticket, &ticket, ticket + 1)) continue;  // `ticket` reloaded
        task(context, index, thread);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
        ticket = atomic_load(&pool.ticket);
    }
}

static void *worker_main(void *arg) {
    const int thread = (int)(intptr_t)arg;
    unsigned seen = atomic_load(&pool.generation);
    for (;;) {
        int spins = 0;
        unsigned generation;
        while ((generation = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen) {
            if (++spins < KILN_SPIN_LIMIT) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool.mutex);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.wake, &pool.mutex);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.mutex);
            spins = 0;
        }
        seen = generation;
        if (thread < pool.threads) run_tasks(generation, thread);
    }
    return NULL;
}

static void set_threads(int count) {
    if (count < 1) count = 1;
    if (count > KILN_MAX_THREADS) count = KILN_MAX_THREADS;
    pthread_mutex_lock(&pool.call);
    // Workers beyond `count` stay parked: they see new generations but skip the work (thread >= threads).
    while (pool.started < count - 1) {
        pthread_t worker;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        // 1 MiB of address space (pages are only touched as used): the GEMM's unrolled register tiles make large
        // frames in unoptimised, sanitised builds (256 KiB overflowed under ASan).
        pthread_attr_setstacksize(&attr, 1024 * 1024);
        const int thread = pool.started + 1;
        const int failed = pthread_create(&worker, &attr, worker_main, (void *)(intptr_t)thread);
        pthread_attr_destroy(&attr);
        if (failed) break;
        pthread_detach(worker);
        pool.started++;
    }
    pool.threads = pool.started + 1 < count ? pool.started + 1 : count;
    pthread_mutex_unlock(&pool.call);
}

static pthread_once_t default_threads = PTHREAD_ONCE_INIT;

// A forked child has only the forking thread: it starts over with no workers (and runs single-threaded until it
// sets its threads again).
static void reset_after_fork(void) {
    pthread_mutex_init(&pool.call, NULL);
    pthread_mutex_init(&pool.mutex, NULL);
    pthread_cond_init(&pool.wake, NULL);
    atomic_store(&pool.sleepers, 0);
    pool.started = 0;
    pool.threads = 1;
}

// Until kiln_threads_set is called, the pool has one thread per online CPU (as OpenBLAS does).
static void init_default_threads(void) {
    pthread_atfork(NULL, NULL, reset_after_fork);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    set_threads(cpus < 1 ? 1 : (int)(cpus > KILN_MAX_THREADS ? KILN_MAX_THREADS : cpus));
}

void kiln_threads_set(int count) {
    pthread_once(&default_threads, init_default_threads);
    set_threads(count);
}

int kiln_threads_get(void) {
    pthread_once(&default_threads, init_default_threads);
    return pool.threads;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void kiln_parallel_for(size_t count, void (*task)(void *, size_t, int), void *context) {
    if (count == 0) return;
    pthread_once(&default_threads, init_default_threads);
    if (pool.threads == 1 || count == 1 || count > 0xffffffffu) {
        for (size_t i = 0; i < count; i++) task(context, i, 0);
        return;
    }
    pthread_mutex_lock(&pool.call);
    if (pool.serial_jobs_left > 0) {
        // Recently stalled: the caller does it all (thread 0's scratch only), the workers stay asleep.
        pool.serial_jobs_left--;
        pthread_mutex_unlock(&pool.call);
        for (size_t i = 0; i < count; i++) task(context, i, 0);
        return;
    }
    const unsigned generation = atomic_load(&pool.generation) + 1;
    // Nothing claimable while the fields change: the new generation with the index saturated.
    atomic_store(&pool.ticket, (uint64_t)generation << 32 | 0xffffffffu);
    atomic_store(&pool.task, task);
    atomic_store(&pool.context, context);
    atomic_store(&pool.count, count);
    atomic_store(&pool.float_mode, kiln_float_mode());
    atomic_store(&pool.done, 0);
    atomic_store(&pool.ticket, (uint64_t)generation << 32);
    atomic_store(&pool.generation, generation);  // seq_cst: publishes the job, then sleepers is read
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mutex);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mutex);
    }
    const uint64_t ran_from = now_ns();
    run_tasks(generation, 0);
    const uint64_t ran_ns = now_ns() - ran_from;
    // Wait for the tasks still running on workers. Briefly spinning covers the usual case (they finish within
    // microseconds); past that a worker has probably been preempted, and yielding lets it (or whoever else
    // needs this core) run instead of burning the time.
    uint64_t waited_from = 0;
    for (int spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < count; spins++) {
        if (spins < KILN_SPIN_LIMIT) {
            cpu_relax();
            continue;
        }
        if (waited_from == 0) waited_from = now_ns();
        sched_yield();
    }
    // A stall is a wait both long and longer than the caller's own share of the job took: a worker that was
    // preempted. Long tasks that merely end unevenly (packing a large layer's weights at load) are not one, so
    // that loading a model does not leave its first predictions on one thread.
    const uint64_t waited_ns = waited_from != 0 ? now_ns() - waited_from : 0;
    const int stalled = waited_ns > KILN_STALL_NS && waited_ns > ran_ns;
    if (stalled) {
        pool.recent_stalls = pool.jobs_since_stall < KILN_STALL_WINDOW ? pool.recent_stalls + 1 : 1;
        pool.jobs_since_stall = 0;
        if (pool.recent_stalls >= KILN_STALLS_TO_SERIALIZE) {
            pool.serial_jobs_left = pool.serial_period;
            pool.serial_period = pool.serial_period * 2 < KILN_SERIAL_JOBS_MOST ? pool.serial_period * 2
                                                                                  : KILN_SERIAL_JOBS_MOST;
            pool.recent_stalls = 0;
            pool.jobs_since_serial = 0;
        }
    } else if (pool.jobs_since_stall < KILN_STALL_WINDOW) {
        pool.jobs_since_stall++;
    }
    if (pool.jobs_since_serial < KILN_CLEAN_JOBS && ++pool.jobs_since_serial == KILN_CLEAN_JOBS)
        pool.serial_period = KILN_SERIAL_JOBS_FIRST;
    pthread_mutex_unlock(&pool.call);
}
