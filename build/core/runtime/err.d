build/core/runtime/err.o: core/runtime/err.c core/runtime/err.h
core/runtime/err.h:
