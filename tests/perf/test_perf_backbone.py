import pytest
import torch

from varformer.perf.backbone import format_table, run_backbone_benchmark


def test_backbone_benchmark_small_config():
    lines = []
    threads, tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(2)
    try:
        result = run_backbone_benchmark(depth=1, batch=1, device='cpu', precisions=('fp32', 'bf16'), vae_ch=32,
                                        ops=('encode', 'teacher_forced', 'generate_greedy'), matmul_n=128,
                                        warmup=0, log=lines.append, threads=1)
        # the run used its own thread count and left the process as it found it
        assert result['threads'] == 1
        assert torch.get_num_threads() == 2 and torch.backends.cuda.matmul.allow_tf32 == tf32
    finally:
        torch.set_num_threads(threads)
    ops = [(r['op'], r['precision']) for r in result['rows']]
    assert ops == [('encode', 'fp32'), ('teacher_forced', 'fp32'), ('generate_greedy', 'fp32'),
                   ('teacher_forced', 'bf16'), ('generate_greedy', 'bf16')]
    tf = next(r for r in result['rows'] if r['op'] == 'teacher_forced')
    C = 64
    assert tf['flops_per_image'] >= 2 * 680 * 12 * C * C       # at least the block matmuls
    assert all(r['images_per_s'] > 0 and r['peak_bytes'] > 0 for r in result['rows'])
    assert 'random weights' in result['weights']
    table = format_table(result)
    assert 'generate_greedy' in table and 'random weights' in table and 'GFLOP/s' in table
    assert set(result['matmul_gflops']) == {'fp32', 'bf16'}
    assert len(lines) == 1 + 2 + 5 and lines[0].startswith('models ready')


def test_backbone_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match='unknown benchmark ops'):
        run_backbone_benchmark(depth=1, vae_ch=32, ops=('decode_everything',))
    with pytest.raises(ValueError, match='repeat'):
        run_backbone_benchmark(depth=1, vae_ch=32, repeat=0)
