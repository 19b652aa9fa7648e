/* The benchmarks of actstore-bench (one file each in client/bench/). */
#ifndef AS_CLIENT_BENCH_H
#define AS_CLIENT_BENCH_H

int as_bench_alloc(int argc, char **argv);
int as_bench_softmax(int argc, char **argv);
int as_bench_conv(int argc, char **argv);
int as_bench_layers(int argc, char **argv);
int as_bench_store(int argc, char **argv);
int as_bench_service(int argc, char **argv);
int as_bench_act(int argc, char **argv);
int as_bench_scale(int argc, char **argv);

#endif
