build/core/runtime/dtype.o: core/runtime/dtype.c core/runtime/dtype.h
core/runtime/dtype.h:
