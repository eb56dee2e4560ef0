"""The chapter's two shopping examples (apples; apples and oranges), run on our layers.

They print exactly what the book's plain-Python version prints.
"""

from __future__ import annotations

from .layers import AddLayer, MulLayer

__all__ = ["apple_example", "apple_orange_example", "main"]


def apple_example(print=print):
    apple, apple_num, tax = 100, 2, 1.1

    mul_apple_layer = MulLayer()
    mul_tax_layer = MulLayer()

    apple_price = mul_apple_layer.forward(apple, apple_num)
    price = mul_tax_layer.forward(apple_price, tax)
    print(price)

    dprice = 1
    dapple_price, dtax = mul_tax_layer.backward(dprice)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    print(dapple, dapple_num, dtax)


def apple_orange_example(print=print):
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1

    mul_apple_layer = MulLayer()
    mul_orange_layer = MulLayer()
    add_apple_orange_layer = AddLayer()
    mul_tax_layer = MulLayer()

    apple_price = mul_apple_layer.forward(apple, apple_num)
    orange_price = mul_orange_layer.forward(orange, orange_num)
    all_price = add_apple_orange_layer.forward(apple_price, orange_price)
    price = mul_tax_layer.forward(all_price, tax)
    print(price)

    dprice = 1
    dall_price, dtax = mul_tax_layer.backward(dprice)
    dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    dorange, dorange_num = mul_orange_layer.backward(dorange_price)
    print(dapple_num, dapple, dorange, dorange_num, dtax)


def main():
    apple_example()
    apple_orange_example()
