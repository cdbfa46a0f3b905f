build/core/runtime/pool.o: core/runtime/pool.c core/runtime/pool.h
core/runtime/pool.h:
