"""The chapter's examples print exactly what the book's plain Python prints."""

import subprocess
import sys

from portablelayers.demo import apple_example, apple_orange_example

APPLE = "220.00000000000003\n2.2 110.00000000000001 200\n"
APPLE_ORANGE = "715.0000000000001\n110.00000000000001 2.2 3.3000000000000003 165.0 650\n"


def test_apple_example_prints_the_book_numbers(capsys):
    apple_example()
    assert capsys.readouterr().out == APPLE


def test_apple_orange_example_prints_the_book_numbers(capsys):
    apple_orange_example()
    assert capsys.readouterr().out == APPLE_ORANGE


def test_demo_command_prints_both_examples():
    result = subprocess.run([sys.executable, "-m", "portablelayers", "demo"],
                            capture_output=True, text=True, check=True)
    assert result.stdout == APPLE + APPLE_ORANGE


def _plain_python_reference():
    """The book's own MulLayer/AddLayer, verbatim, as the independent reference."""

    class MulLayer:
        def forward(self, x, y):
            self.x, self.y = x, y
            return x * y

        def backward(self, dout):
            return dout * self.y, dout * self.x

    apple_layer, tax_layer = MulLayer(), MulLayer()
    price = tax_layer.forward(apple_layer.forward(100, 2), 1.1)
    dapple_price, dtax = tax_layer.backward(1)
    return (price, *apple_layer.backward(dapple_price), dtax)


def test_demo_agrees_with_the_book_code_run_as_plain_python(capsys):
    apple_example()
    price, dapple, dapple_num, dtax = _plain_python_reference()
    assert capsys.readouterr().out == f"{price}\n{dapple} {dapple_num} {dtax}\n"
