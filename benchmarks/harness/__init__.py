"""What every benchmark suite shares: specs, timing, threads, results, plots, the methods compared."""
