using Puzzle.Runtime;
using Puzzle.Stages.Costs;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Memory;

/// <summary>
/// Timer reads wait for the device. CUDA is not here, so the device's queue is played by a synchronise action that
/// takes time (as cuda.synchronize does while kernels run): a read must include it, a start must not.
/// </summary>
public class DeviceTimingTests
{
    [Fact]
    public void Device_clock_synchronises_before_starting_and_before_every_read()
    {
        var events = new List<string>();
        var clock = new DeviceClock(CPU, () => { events.Add("sync"); Thread.Sleep(30); });
        Assert.Equal(["sync"], events);
        double first = clock.ElapsedMilliseconds;
        Assert.True(first >= 29, $"the read waited for the queued work: {first} ms");
        double second = clock.ElapsedMilliseconds;
        Assert.True(second >= first + 29, $"every read waits: {second} ms after {first} ms");
        clock.Restart();
        Assert.Equal(4, events.Count);
        Assert.InRange(clock.ElapsedMilliseconds, 29, 29 + 5_000);                          // the sync before the start is not counted
    }

    [Fact]
    public void Cost_timer_times_each_repeat_between_two_synchronisations()
    {
        int syncs = 0, actions = 0;
        var timer = new BlockTimings.Timer(warmup: 2, repeats: 5, CPU, synchronize: () => { syncs++; Thread.Sleep(5); });
        var timing = timer.Measure(() => actions++);
        Assert.Equal(7, actions);
        Assert.Equal(1 + 5 * 2, syncs);                                                 // the clock's creation, then a start and a read per repeat
        Assert.True(timing.MedianMs >= 4.5, $"the read after the action waited for the device: {timing.MedianMs} ms");
    }

    [Fact]
    public void Synchronize_on_the_cpu_returns_at_once()
    {
        var clock = DeviceClock.StartNew(CPU);
        for (int i = 0; i < 1000; i++) Devices.Synchronize(CPU);
        Assert.InRange(clock.ElapsedMilliseconds, 0, 500);
    }
}
