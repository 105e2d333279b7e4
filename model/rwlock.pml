/* The reader-writer lock (kind 3): writer preference, upgrade, marks with leases. See README.md. */
#define KIND K_RW
#include "wh.pml"
