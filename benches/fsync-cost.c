/* What one WAL group's durability costs this machine: CPU and wall time per
 * write + fdatasync, appending to a growing file (mode 0, what the WAL does)
 * versus overwriting a pre-written file (1: fdatasync, 2: O_DSYNC,
 * 3: O_DIRECT|O_DSYNC with 8 KB aligned writes). docs/PERFORMANCE.md.
 *
 *   gcc -O2 benches/fsync-cost.c -o /tmp/fsync-cost && /tmp/fsync-cost 0 target/fsync-cost.dat
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static double cpu(){struct rusage r;getrusage(RUSAGE_SELF,&r);return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int n=2000; int sz=6000; char*buf=aligned_alloc(4096,1<<20); memset(buf,'x',1<<20);
  if(argc<3){fprintf(stderr,"usage: %s MODE(0-3) FILE\n",argv[0]);return 2;}
  const char*p=argv[2]; unlink(p);
  int fd;
  if(mode==0){ fd=open(p,O_CREAT|O_WRONLY|O_APPEND,0600);} // append + fdatasync
  else { fd=open(p,O_CREAT|O_RDWR,0600); for(int i=0;i<64;i++) write(fd,buf,1<<20); fsync(fd); lseek(fd,0,SEEK_SET);
    if(mode==2){ close(fd); fd=open(p,O_RDWR|O_DSYNC);} if(mode==3){ close(fd); fd=open(p,O_RDWR|O_DSYNC|O_DIRECT); sz=8192;} }
  double t0=now(),c0=cpu();
  for(int i=0;i<n;i++){ if(write(fd,buf,sz)!=sz) {perror("w");return 1;} if(mode<2) fdatasync(fd);} 
  double t1=now(),c1=cpu();
  printf("mode %d: %.1f us/op wall, %.1f us/op cpu\n",mode,(t1-t0)/n*1e6,(c1-c0)/n*1e6);
}
