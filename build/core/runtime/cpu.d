build/core/runtime/cpu.o: core/runtime/cpu.c core/runtime/cpu.h
core/runtime/cpu.h:
