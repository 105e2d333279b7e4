/* A semaphore (kind 2) with max_count 2: tickets in the slot table, total derived. See README.md. */
#define KIND K_SEM
#define MAXC 2
#include "wh.pml"
